//! astrgate-bench: the fake upstream, the load generator and the benchmark scenarios behind
//! `scripts/bench.sh`, which writes docs/benchmarks.md from what this program prints, and the soak
//! behind `scripts/soak.sh`, which writes that file's `## Soak` section.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attack;
mod auth;
mod live;
mod soak;
mod soak_report;
mod sse;
mod stats;
mod upstream;
mod ws;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks for astrgate")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A fast fake OpenAI-compatible upstream (chat completions, transcriptions, speech).
    FakeUpstream {
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 20)]
        tokens: usize,
        #[arg(long, default_value_t = 0)]
        token_delay_ms: u64,
        #[arg(long, default_value_t = 0)]
        first_delay_ms: u64,
        #[arg(long, default_value_t = 0)]
        stt_delay_ms: u64,
        #[arg(long, default_value_t = 0)]
        tts_delay_ms: u64,
    },
    /// Closed-loop SSE load, direct to the upstream and through astrgate.
    Sse {
        #[arg(long)]
        astrgate: String,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        key: String,
        /// astrgate's provider id for `--upstream` (default: astrgate's default provider).
        #[arg(long)]
        provider: Option<String>,
        #[arg(short, long, default_value_t = 64)]
        concurrency: usize,
        #[arg(short, long, default_value_t = 10)]
        duration: u64,
        /// Also the same load through astrgate's OpenAI-compatible `/v1/chat/completions`.
        #[arg(long)]
        openai: bool,
    },
    /// What the Prometheus metrics record per chat request (a request, its first token, its
    /// tokens, a run started and ended), before and after the registry is installed, on 1 and 2
    /// threads; and one render of the result.
    Metrics {
        #[arg(long, default_value_t = 1_000_000)]
        n: u32,
    },
    /// One Live turn's own overhead alone (the `all` scenario, for repeated runs): end of speech
    /// to first audio, p50 and p99, minus the fake providers' fixed latency.
    Live {
        #[arg(long)]
        astrgate: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 400)]
        turns: usize,
        /// The providers' fixed latency (STT + TTS delays of the fake upstream).
        #[arg(long, default_value_t = 40)]
        fixed_provider_ms: u64,
    },
    /// Store write path alone: the writes of one chat turn, sequentially and concurrently.
    Store {
        #[arg(long, default_value_t = 2000)]
        n: usize,
    },
    /// Steady mixed load for a fixed time (SSE chats, socket churn, uploads, OpenAI-door
    /// completions) with the server's RSS sampled; writes the `## Soak` Markdown section to `out`
    /// and fails when any operation failed or RSS grew past `max_growth_pct` after the warm-up.
    Soak {
        #[arg(long)]
        astrgate: String,
        #[arg(long)]
        key: String,
        /// astrgate's process id (for RSS and open file descriptors).
        #[arg(long)]
        pid: u32,
        /// Minutes of load.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Seconds at the start left out of the RSS growth measure.
        #[arg(long, default_value_t = 120)]
        warmup_secs: u64,
        #[arg(long, default_value_t = 10)]
        sample_secs: u64,
        #[arg(long, default_value_t = 500)]
        chats: usize,
        #[arg(long, default_value_t = 5)]
        turns_per_session: usize,
        #[arg(long, default_value_t = 32)]
        churn: usize,
        #[arg(long, default_value_t = 100)]
        churn_pause_ms: u64,
        #[arg(long, default_value_t = 4)]
        uploaders: usize,
        #[arg(long, default_value_t = 1000)]
        upload_pause_ms: u64,
        #[arg(long, default_value_t = 256)]
        max_upload_kib: usize,
        #[arg(long, default_value_t = 500)]
        openai_pause_ms: u64,
        #[arg(long, default_value_t = 10.0)]
        max_growth_pct: f64,
        /// At most this many seconds after the load for the open fds to come back (the last
        /// sample: RSS and open fds with no load).
        #[arg(long, default_value_t = 200)]
        settle_secs: u64,
        /// The fake upstream's pacing, in words, for the report.
        #[arg(long, default_value = "streams 20 tokens")]
        upstream_note: String,
        /// A sentence about the machine for the report (shared with other work, …).
        #[arg(long, default_value = "")]
        machine_note: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Every scenario; writes the Markdown report.
    All {
        #[arg(long)]
        astrgate: String,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        jwt: String,
        /// astrgate's process id (for RSS).
        #[arg(long)]
        pid: u32,
        /// RSS measured right after start-up, before any request (KiB).
        #[arg(long)]
        idle_rss_kib: u64,
        /// Fixed STT + TTS latency configured on the fake upstream, in ms.
        #[arg(long, default_value_t = 40)]
        fixed_provider_ms: u64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 5000)]
        idle_sockets: usize,
        /// A second fake upstream that paces its tokens (`fake-upstream --token-delay-ms`), for
        /// the c = 64 run that does not saturate the machine.
        #[arg(long)]
        paced_upstream: Option<String>,
        /// astrgate's provider id for `--paced-upstream`.
        #[arg(long, default_value = "paced")]
        paced_provider: String,
        /// The paced upstream's delay between tokens, in ms (for the report's text).
        #[arg(long, default_value_t = 5)]
        paced_token_ms: u64,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

fn row(r: &mut sse::Report) -> String {
    format!(
        "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        match r.target {
            sse::Target::Direct => "upstream direct",
            sse::Target::Astrgate => "through astrgate",
            sse::Target::OpenAi => "through astrgate, `/v1/chat/completions`",
        },
        r.concurrency,
        r.rps(),
        r.errors,
        r.first_token.pct_ms(50.0),
        r.first_token.pct_ms(99.0),
        r.total.pct_ms(50.0),
        r.total.pct_ms(90.0),
        r.total.pct_ms(99.0),
        r.first_event.pct_ms(50.0),
    )
}

const SSE_HEADER: &str = "| target | c | req/s | errors | first token p50 ms | first token p99 ms | complete p50 ms | complete p90 ms | complete p99 ms | first event p50 ms |\n|---|---|---|---|---|---|---|---|---|---|";

/// Records what one chat request records, `n` times on each of 1 and 2 threads; prints ns per request.
fn metrics_cost(n: u32, label: &str) {
    use astrgate::metrics::{Door, first_token, http_request, runs_active, tokens};
    for threads in [1u32, 2] {
        let t = std::time::Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for i in 0..n {
                        runs_active(1);
                        http_request("/api/v1/chat", "POST", 200, Duration::from_micros(u64::from(i % 5000)));
                        first_token(Door::SseChat, Duration::from_millis(3));
                        tokens("fake", "fake-model", 10, 20);
                        runs_active(-1);
                    }
                });
            }
        });
        let per = t.elapsed().as_nanos() as f64 * f64::from(threads) / f64::from(n * threads);
        println!("metrics {label}, {threads} thread(s): {per:.0} ns of CPU per request");
    }
}

/// The same closed-loop load straight at `upstream` and then through astrgate; `provider` selects
/// astrgate's provider for that upstream (`None`: the default one).
async fn sse_pair(
    astrgate: &str,
    upstream: &str,
    provider: Option<&str>,
    key: &str,
    c: usize,
    secs: u64,
) -> anyhow::Result<(sse::Report, sse::Report)> {
    let client = sse::client(c)?;
    let d = sse::run(
        client.clone(),
        sse::Target::Direct,
        format!("{upstream}/chat/completions"),
        String::new(),
        None,
        c,
        Duration::from_secs(secs),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = sse::run(
        client,
        sse::Target::Astrgate,
        format!("{astrgate}/api/v1/chat"),
        key.to_string(),
        provider.map(str::to_string),
        c,
        Duration::from_secs(secs),
    )
    .await;
    Ok((d, a))
}

/// The same load through astrgate's OpenAI-compatible `/v1/chat/completions` (stateless: no
/// session, nothing stored).
async fn sse_openai(
    astrgate: &str,
    provider: Option<&str>,
    key: &str,
    c: usize,
    secs: u64,
) -> anyhow::Result<sse::Report> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(sse::run(
        sse::client(c)?,
        sse::Target::OpenAi,
        format!("{astrgate}/v1/chat/completions"),
        key.to_string(),
        provider.map(str::to_string),
        c,
        Duration::from_secs(secs),
    )
    .await)
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::FakeUpstream { listen, tokens, token_delay_ms, first_delay_ms, stt_delay_ms, tts_delay_ms } => {
            let opts = upstream::Options {
                tokens,
                token_delay: Duration::from_millis(token_delay_ms),
                first_delay: Duration::from_millis(first_delay_ms),
                stt_delay: Duration::from_millis(stt_delay_ms),
                tts_delay: Duration::from_millis(tts_delay_ms),
                text: None,
            };
            upstream::serve(listen, opts).await
        }
        Cmd::Live { astrgate, key, turns, fixed_provider_ms } => {
            let mut lv = live::overhead(&astrgate.replacen("http", "ws", 1), &key, turns).await?;
            let fixed = fixed_provider_ms as f64;
            let (p50, p99) = (lv.first_audio.pct_ms(50.0), lv.first_audio.pct_ms(99.0));
            println!(
                "live: {turns} turns, first audio p50 {p50:.2} ms, p99 {p99:.2} ms; overhead p50 {:.2} ms, p99 {:.2} ms; interrupt p99 {:.2} ms",
                p50 - fixed,
                p99 - fixed,
                lv.interrupt.pct_ms(99.0)
            );
            Ok(())
        }
        Cmd::Metrics { n } => {
            metrics_cost(n, "not installed");
            astrgate::metrics::install();
            metrics_cost(n, "installed");
            let t = std::time::Instant::now();
            let text = astrgate::metrics::render().unwrap_or_default();
            println!("render: {:.1} µs for {} bytes", t.elapsed().as_secs_f64() * 1e6, text.len());
            Ok(())
        }
        Cmd::Store { n } => {
            let dir = tempfile::tempdir()?;
            let store = astrgate::store::connect(&format!("sqlite://{}", dir.path().join("s.db").display())).await?;
            async fn turn(store: &dyn astrgate::store::Store, i: usize) -> anyhow::Result<()> {
                use astrgate::store::*;
                let sid = format!("s{i}");
                let now = now_micros();
                store.create_session(&SessionRecord::new(&sid, "webchat", "u")).await?;
                let _ = store.get_session(&sid).await?;
                let _ = store.recent_messages(&sid, 20).await?;
                let m = NewMessage {
                    session_id: sid.clone(),
                    platform_id: "webchat".into(),
                    sender_id: "u".into(),
                    sender_name: "u".into(),
                    content: serde_json::json!({"type": "user", "message": [{"type": "plain", "text": "hi"}]}),
                    llm_checkpoint_id: Some("c".into()),
                };
                store.insert_message(&m).await?;
                store.insert_message(&m).await?;
                store
                    .insert_run(&RunRecord {
                        run_id: format!("r{i}"),
                        session_id: sid,
                        username: "u".into(),
                        status: "done".into(),
                        events: "[]".repeat(200),
                        created_at: now,
                        finished_at: now,
                        message_id: None,
                        instance_id: None,
                    })
                    .await?;
                Ok(())
            }
            let t = std::time::Instant::now();
            for _ in 0..n {
                store.ping().await?;
            }
            println!("ping round trip: {:.1} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);
            let t = std::time::Instant::now();
            for i in 0..n {
                turn(store.as_ref(), i).await?;
            }
            let seq = t.elapsed();
            let t = std::time::Instant::now();
            let mut tasks = Vec::new();
            for w in 0..64 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..n / 64 {
                        turn(store.as_ref(), 1_000_000 + w * 100_000 + i).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await?;
            }
            let conc = t.elapsed();
            println!(
                "sequential: {:.1} turns/s ({:.3} ms/turn); 64 concurrent: {:.1} turns/s",
                n as f64 / seq.as_secs_f64(),
                seq.as_secs_f64() * 1000.0 / n as f64,
                (n / 64 * 64) as f64 / conc.as_secs_f64()
            );
            Ok(())
        }
        Cmd::Sse { astrgate, upstream, key, provider, concurrency, duration, openai } => {
            let (mut d, mut a) =
                sse_pair(&astrgate, &upstream, provider.as_deref(), &key, concurrency, duration).await?;
            println!("{SSE_HEADER}\n{}\n{}", row(&mut d), row(&mut a));
            println!(
                "throughput ratio {:.2}, added p99 {:.2} ms",
                a.rps() / d.rps(),
                a.total.pct_ms(99.0) - d.total.pct_ms(99.0)
            );
            if openai {
                let mut o = sse_openai(&astrgate, provider.as_deref(), &key, concurrency, duration).await?;
                println!("{}", row(&mut o));
                println!(
                    "/v1/chat/completions: throughput ratio {:.2}, added p99 {:.2} ms",
                    o.rps() / d.rps(),
                    o.total.pct_ms(99.0) - d.total.pct_ms(99.0)
                );
            }
            Ok(())
        }
        Cmd::Soak {
            astrgate,
            key,
            pid,
            minutes,
            warmup_secs,
            sample_secs,
            chats,
            turns_per_session,
            churn,
            churn_pause_ms,
            uploaders,
            upload_pause_ms,
            max_upload_kib,
            openai_pause_ms,
            max_growth_pct,
            settle_secs,
            upstream_note,
            machine_note,
            out,
        } => {
            let opts = soak::Options {
                astrgate,
                key,
                pid,
                duration: Duration::from_secs(minutes * 60),
                warmup: Duration::from_secs(warmup_secs),
                sample_every: Duration::from_secs(sample_secs),
                chats,
                turns_per_session: turns_per_session.max(1),
                churn,
                churn_pause: Duration::from_millis(churn_pause_ms),
                uploaders,
                upload_pause: Duration::from_millis(upload_pause_ms),
                openai_pause: Duration::from_millis(openai_pause_ms),
                settle: Duration::from_secs(settle_secs),
                max_upload: max_upload_kib * 1024,
            };
            let load = soak::describe(&opts, &upstream_note);
            let report = soak::run(opts).await?;
            let machine = format!(
                "Machine: {} ({} cores), {}. {machine_note}",
                sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
                sh("nproc"),
                sh("rustc --version")
            );
            let date = sh("date -u +'%Y-%m-%d %H:%M UTC'");
            let md = report.markdown(&load, &date, machine.trim_end(), max_growth_pct)?;
            std::fs::write(&out, &md)?;
            println!("{md}");
            if !report.passed(max_growth_pct) {
                eprintln!(
                    "soak failed: {} errors, RSS growth after the warm-up {}, open fds {} at the start and {} after the load",
                    report.errors_total(),
                    report.growth().map(|g| format!("{:+.1} %", g.fit_pct)).unwrap_or_else(|| "unknown".into()),
                    report.samples[0].fds,
                    report.after.fds
                );
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::All {
            astrgate,
            upstream,
            key,
            jwt,
            pid,
            idle_rss_kib,
            fixed_provider_ms,
            duration,
            idle_sockets,
            paced_upstream,
            paced_provider,
            paced_token_ms,
            out,
        } => {
            let idle_rss = idle_rss_kib;
            let login_rss = stats::rss_kib(pid)?;
            eprintln!("idle RSS {idle_rss} KiB, after one login {login_rss} KiB");
            let ws_base = astrgate.replacen("http", "ws", 1);
            // Latency-sensitive scenarios first, on a quiet server.
            eprintln!("live overhead…");
            let mut lv = live::overhead(&ws_base, &key, 400).await?;
            let mut pd = live::providers_direct(&upstream, 100).await?;
            eprintln!("auth cost…");
            let au = auth::measure(&sse::client(4)?, &astrgate, &key, &jwt).await?;
            let mut sse_rows = Vec::new();
            let mut ratios = Vec::new();
            let mut openai_ratios = Vec::new();
            for c in [1usize, 64, 512] {
                eprintln!("SSE c={c}…");
                let (mut d, mut a) = sse_pair(&astrgate, &upstream, None, &key, c, duration).await?;
                ratios.push((
                    c,
                    a.rps() / d.rps(),
                    a.total.pct_ms(99.0) - d.total.pct_ms(99.0),
                    a.total.pct_ms(50.0) - d.total.pct_ms(50.0),
                ));
                eprintln!("SSE c={c}, /v1/chat/completions…");
                let mut o = sse_openai(&astrgate, None, &key, c, duration).await?;
                openai_ratios.push((
                    c,
                    o.rps() / d.rps(),
                    o.total.pct_ms(99.0) - d.total.pct_ms(99.0),
                    o.total.pct_ms(50.0) - d.total.pct_ms(50.0),
                ));
                sse_rows.push(row(&mut d));
                sse_rows.push(row(&mut a));
                sse_rows.push(row(&mut o));
                eprintln!("{}", sse_rows[sse_rows.len() - 3..].join("\n"));
            }
            let mut paced = None;
            if let Some(up) = &paced_upstream {
                eprintln!("SSE c=64, paced upstream…");
                let (mut d, mut a) = sse_pair(&astrgate, up, Some(&paced_provider), &key, 64, duration).await?;
                let (d_row, a_row) = (row(&mut d), row(&mut a));
                eprintln!("{d_row}\n{a_row}");
                paced = Some((
                    d_row,
                    a_row,
                    a.rps() / d.rps(),
                    a.total.pct_ms(50.0) - d.total.pct_ms(50.0),
                    a.total.pct_ms(99.0) - d.total.pct_ms(99.0),
                ));
            }
            let after_load_rss = stats::rss_kib(pid)?;
            eprintln!("idle sockets…");
            let idle = ws::idle(&ws_base, &key, idle_sockets, pid).await?;
            // Last: the login flood spends the global failed-login budget.
            eprintln!("attacks: silent connections…");
            let host = astrgate.trim_start_matches("http://").to_string();
            let mut silent = attack::silent_connections(&astrgate, &host, 500).await?;
            eprintln!("attacks: login flood…");
            let mut flood = attack::login_flood(&astrgate, pid, 300, 150).await?;

            let fixed = fixed_provider_ms as f64;
            let (la50, la99) = (lv.first_audio.pct_ms(50.0), lv.first_audio.pct_ms(99.0));
            let (c64_ratio, c64_added) =
                ratios.iter().find(|r| r.0 == 64).map(|r| (r.1, r.2)).unwrap_or((f64::NAN, f64::NAN));
            let mark = |ok: bool| if ok { "met" } else { "**missed**" };
            let mut md = String::new();
            writeln!(md, "# Benchmarks\n")?;
            writeln!(
                md,
                "Written by `scripts/bench.sh` on {} from the numbers `astrgate-bench` printed in that run; rerun it to regenerate this file. Targets are reported here, never asserted in tests.\n",
                sh("date -u +'%Y-%m-%d %H:%M UTC'")
            )?;
            writeln!(md, "## Machine\n")?;
            writeln!(
                md,
                "- CPU: {} ({} cores visible)",
                sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
                sh("nproc")
            )?;
            writeln!(md, "- Memory: {}", sh("grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2-3"))?;
            writeln!(md, "- Kernel: {}; {}", sh("uname -r"), sh("rustc --version"))?;
            writeln!(
                md,
                "- astrgate: release build, SQLite (WAL) in a temporary data dir, default logging (info, text, to a file); load generator, fake upstream and astrgate share the machine.\n"
            )?;
            writeln!(md, "## Targets\n")?;
            writeln!(md, "| target | goal | measured | |\n|---|---|---|---|")?;
            writeln!(
                md,
                "| added p99 latency over the direct upstream, c = 64 | ≤ 1 ms | {c64_added:.2} ms | {} |",
                mark(c64_added <= 1.0)
            )?;
            writeln!(
                md,
                "| throughput vs the direct upstream, c = 64, persistence on | ≥ 0.5× | {c64_ratio:.2}× | {} |",
                mark(c64_ratio >= 0.5)
            )?;
            writeln!(
                md,
                "| idle RSS | ≤ 30 MiB | {:.1} MiB | {} |",
                idle_rss as f64 / 1024.0,
                mark(idle_rss as f64 / 1024.0 <= 30.0)
            )?;
            writeln!(
                md,
                "| RSS per idle WebSocket | ≤ 64 KiB | {:.1} KiB | {} |",
                idle.per_conn_kib(),
                mark(idle.per_conn_kib() <= 64.0)
            )?;
            writeln!(
                md,
                "| Live pipeline overhead (p50) | ≤ 5 ms | {:.2} ms | {} |",
                la50 - fixed,
                mark(la50 - fixed <= 5.0)
            )?;
            writeln!(
                md,
                "| interrupt → `stop_play` (p99) | ≤ 100 ms | {:.2} ms | {} |\n",
                lv.interrupt.pct_ms(99.0),
                mark(lv.interrupt.pct_ms(99.0) <= 100.0)
            )?;
            if let Some((_, _, ratio, _, p99)) = &paced {
                writeln!(
                    md,
                    "Not saturated — c = 64 against an upstream that paces its tokens ({paced_token_ms} ms apart; details below): added p99 {p99:.2} ms, throughput ratio {ratio:.2}. Reported beside the targets, not instead of them.\n"
                )?;
            }
            writeln!(
                md,
                "AstrBot, for comparison (from the project brief, same class of machine): about 12 complete chats per second, 250–300 MiB RSS.\n"
            )?;
            writeln!(
                md,
                "How these numbers were reached, what changed on the way, and why the missed targets are missed: [performance.md](performance.md).\n"
            )?;
            writeln!(
                md,
                "## SSE chat: `POST /api/v1/chat` and `POST /v1/chat/completions` vs the upstream directly\n"
            )?;
            writeln!(
                md,
                "Closed loop: `c` workers each send a chat, read its SSE stream to the end, and send the next, for {duration} s. Each astrgate request is a new session of one of `c` users, 20 tokens streamed by the fake upstream with no delay, and everything persisted (session, user message, reply, run log). Each `/v1/chat/completions` request is stateless (nothing stored) with the whole conversation in it. \"First token\" is the first content delta (`plain` event through `/api/v1/chat`, the first `content` chunk directly and through `/v1/chat/completions`); \"first event\" is the `session_id` event through `/api/v1/chat`, the role chunk through `/v1/chat/completions`.\n"
            )?;
            writeln!(md, "{SSE_HEADER}")?;
            for r in &sse_rows {
                writeln!(md, "{r}")?;
            }
            writeln!(md)?;
            writeln!(
                md,
                "| c | throughput ratio (astrgate / direct) | added p50 ms | added p99 ms |\n|---|---|---|---|"
            )?;
            for (c, ratio, p99, p50) in &ratios {
                writeln!(md, "| {c} | {ratio:.2} | {p50:.2} | {p99:.2} |")?;
            }
            writeln!(
                md,
                "\nThe OpenAI-compatible `/v1/chat/completions` under the same load (streamed, `include_usage`, the default profile; stateless, so nothing is stored, and a first-token mark on the first `content` delta):\n"
            )?;
            writeln!(
                md,
                "| c | throughput ratio (`/v1/chat/completions` / direct) | added p50 ms | added p99 ms |\n|---|---|---|---|"
            )?;
            for (c, ratio, p99, p50) in &openai_ratios {
                writeln!(md, "| {c} | {ratio:.2} | {p50:.2} | {p99:.2} |")?;
            }
            if let Some((d_row, a_row, ratio, p50, p99)) = &paced {
                writeln!(md, "\n### With a paced upstream, c = 64\n")?;
                writeln!(
                    md,
                    "The runs above use an upstream that answers from memory with no delay, so at c = 64 and 512 the machine's two cores are saturated and the added latency is mostly queueing. This run uses a second fake upstream that waits {paced_token_ms} ms between tokens (20 tokens ≈ {} ms per answer; real models are slower still), selected per request with `selected_provider`, so the machine is not saturated and the difference is astrgate's own cost per chat.\n",
                    paced_token_ms * 20
                )?;
                writeln!(md, "{SSE_HEADER}\n{d_row}\n{a_row}\n")?;
                writeln!(
                    md,
                    "Throughput ratio {ratio:.2}; added latency to completion p50 {p50:.2} ms, p99 {p99:.2} ms."
                )?;
            }
            writeln!(
                md,
                "\nRSS: {:.1} MiB idle after start-up; {:.1} MiB after one dashboard login (argon2id verification works in 19 MiB, which glibc keeps for reuse); {:.1} MiB after the SSE runs.\n",
                idle_rss as f64 / 1024.0,
                login_rss as f64 / 1024.0,
                after_load_rss as f64 / 1024.0
            )?;
            writeln!(md, "## Idle WebSockets\n")?;
            writeln!(
                md,
                "{} Live sockets (`/api/v1/live/ws`, API key) opened and held: RSS {:.1} MiB → {:.1} MiB, **{:.1} KiB per connection**.\n",
                idle.n,
                idle.rss_before_kib as f64 / 1024.0,
                idle.rss_after_kib as f64 / 1024.0,
                idle.per_conn_kib()
            )?;
            writeln!(md, "## One Live turn's own overhead\n")?;
            writeln!(
                md,
                "{} spoken turns on one socket (1 s of PCM each), fake STT and TTS answering after a fixed {} ms together, fake LLM streaming 20 tokens at once. Measured from sending `end_speaking` to receiving the first `response` frame; the overhead (the target's measure) is that minus the fixed provider latency, so it also holds the three loopback HTTP exchanges with the providers. The next two rows time those providers when called directly with the same payloads (pooled connection, p50 of 100 each), which shows what astrgate itself spends between them.\n",
                lv.turns, fixed_provider_ms
            )?;
            writeln!(md, "| | p50 ms | p99 ms |\n|---|---|---|")?;
            writeln!(md, "| end of speech → first audio | {la50:.2} | {la99:.2} |")?;
            writeln!(
                md,
                "| overhead (minus {fixed_provider_ms} ms of providers) | {:.2} | {:.2} |",
                la50 - fixed,
                la99 - fixed
            )?;
            let direct = pd.total_p50_ms();
            writeln!(
                md,
                "| the same providers called directly, one after another (STT {:.2} + LLM {:.2} + TTS {:.2}) | {direct:.2} | |",
                pd.stt.pct_ms(50.0),
                pd.llm.pct_ms(50.0),
                pd.tts.pct_ms(50.0)
            )?;
            writeln!(
                md,
                "| end of speech → first audio, minus the providers called directly | {:.2} | |",
                la50 - direct
            )?;
            writeln!(
                md,
                "| `interrupt` → `stop_play` ({} turns) | {:.2} | {:.2} |\n",
                lv.interrupt.len(),
                lv.interrupt.pct_ms(50.0),
                lv.interrupt.pct_ms(99.0)
            )?;
            writeln!(md, "## Under attack (no credentials)\n")?;
            writeln!(
                md,
                "The unauthenticated attacks of the hardening audit, against the same server. `/healthz` is polled every 20 ms from an address of its own while each runs. Targets: RSS grows < 256 MiB under the login flood, `/healthz` answers in < 1 s, silent connections are closed within 60 s.\n"
            )?;
            writeln!(md, "| attack | result | `/healthz` p50 / max ms | |\n|---|---|---|---|")?;
            let flood_growth = flood.rss_peak_kib.saturating_sub(flood.rss_before_kib) as f64 / 1024.0;
            let flood_health_max = flood.health.pct_ms(100.0);
            writeln!(
                md,
                "| {} wrong logins at once from {} addresses | RSS {:.1} → peak {:.1} → {:.1} MiB (**+{flood_growth:.1} MiB** at the peak); {} checked (401), {} refused by the limits (429), all answered in {:.1} s | {:.2} / {flood_health_max:.2} | {} |",
                flood.logins,
                flood.addresses,
                flood.rss_before_kib as f64 / 1024.0,
                flood.rss_peak_kib as f64 / 1024.0,
                flood.rss_after_kib as f64 / 1024.0,
                flood.unauthorized,
                flood.limited,
                flood.elapsed.as_secs_f64(),
                flood.health.pct_ms(50.0),
                mark(flood_growth < 256.0 && flood_health_max < 1000.0)
            )?;
            let silent_health_max = silent.health.pct_ms(100.0);
            writeln!(
                md,
                "| {} connections that never send a byte | all closed by the server after {:.1} s (`header_read_timeout_secs` = 10) | {:.2} / {silent_health_max:.2} | {} |\n",
                silent.n,
                silent.all_closed_after.as_secs_f64(),
                silent.health.pct_ms(50.0),
                mark(silent.all_closed_after.as_secs_f64() < 60.0 && silent_health_max < 1000.0)
            )?;
            writeln!(md, "## Authentication cost\n")?;
            writeln!(md, "| step | cost |\n|---|---|")?;
            writeln!(
                md,
                "| API key, verified from the cache (SHA-256 + map lookup) | {:.0} ns |",
                au.verify_cached_ns
            )?;
            writeln!(md, "| API key, verified from SQLite (cache miss) | {:.1} µs |", au.verify_db_us)?;
            writeln!(md, "| SHA-256 of a key alone | {:.0} ns |", au.sha256_ns)?;
            writeln!(md, "| dashboard JWT (HS256) verification | {:.0} ns |", au.jwt_ns)?;
            writeln!(md, "| HTTP p50, `GET /api/v1/im/bots` with an API key | {:.3} ms |", au.http_key_p50_ms)?;
            writeln!(md, "| HTTP p50, `GET /api/v1/im/bots` with a dashboard JWT | {:.3} ms |", au.http_jwt_p50_ms)?;
            writeln!(md, "| HTTP p50, unauthenticated 404 | {:.3} ms |\n", au.http_none_p50_ms)?;
            writeln!(
                md,
                "AstrBot hashes keys with PBKDF2-HMAC-SHA256 at 100,000 iterations on every request (tens of milliseconds); astrgate stores SHA-256 of a 256-bit random key (see docs/architecture.md).\n"
            )?;
            std::fs::write(&out, md)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
    }
}
