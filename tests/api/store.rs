//! One store suite, run against both backends: SQLite in a temp dir, and PostgreSQL in a
//! database of its own (when `TEST_POSTGRES_URL` is set; `scripts/test.sh` sets it). Then
//! `copy-db`'s copy both ways, with its row-count check.

use std::sync::Arc;

use astrgate::store::{
    self, ApiKeyRecord, AttachmentRecord, AuditEvent, KeyUpdate, Limits, NewMessage, RunRecord, SessionRecord, Store,
    Table, UsageCounts, UsageRow, now_micros,
};
use serde_json::json;

use crate::helpers::fresh_postgres;

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    store::connect(&format!("sqlite://{}", dir.path().join("s.db").display())).await.unwrap()
}

fn key(id: &str, hash: &str, at: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: id.into(),
        name: format!("key {id}"),
        key_hash: hash.into(),
        key_prefix: "abk_xxxxxxxx".into(),
        scopes: vec!["chat".into(), "file".into()],
        created_by: "test".into(),
        created_at: at,
        updated_at: at,
        last_used_at: None,
        expires_at: Some(at + 1_000_000),
        revoked_at: None,
        username: Some("alice".into()),
        limits: Limits { requests_per_minute: Some(5), concurrent_runs: None, tokens_per_day: Some(1000) },
    }
}

fn msg(session: &str, text: &str) -> NewMessage {
    NewMessage {
        session_id: session.into(),
        platform_id: "webchat".into(),
        sender_id: "alice".into(),
        sender_name: "alice".into(),
        content: json!({"type": "user", "message": [{"type": "plain", "text": text}]}),
        llm_checkpoint_id: Some(format!("ck-{text}")),
    }
}

fn audit(time: i64, action: &str, target: Option<&str>) -> AuditEvent {
    AuditEvent {
        time,
        actor: "astrgate".into(),
        action: action.into(),
        target: target.map(Into::into),
        ip: Some("203.0.113.7".into()),
        detail: None,
    }
}

fn run(id: &str, session: &str, status: &str, finished_at: i64) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        session_id: session.into(),
        username: "alice".into(),
        status: status.into(),
        events: r#"[{"event":"session_id","session_id":"s"},"tok",{"event":"end"}]"#.into(),
        created_at: finished_at - 10,
        finished_at,
        message_id: None,
        instance_id: Some("inst-a".into()),
    }
}

/// Every method of the trait, with the answers callers rely on.
async fn exercise(s: Arc<dyn Store>) {
    s.ping().await.unwrap();
    assert!(!s.writes_failing());
    s.probe_write().await.unwrap();

    // settings: the first value wins, even when instances race to initialise it
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.init_setting("secret", &format!("v{i}")).await.unwrap() })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for r in racers {
        seen.insert(r.await.unwrap());
    }
    assert_eq!(seen.len(), 1, "every racer reads the same stored value: {seen:?}");
    assert_eq!(s.get_setting("secret").await.unwrap(), seen.into_iter().next());
    s.put_setting("secret", "changed").await.unwrap();
    assert_eq!(s.get_setting("secret").await.unwrap().as_deref(), Some("changed"));
    assert_eq!(s.get_setting("none").await.unwrap(), None);

    // api keys
    let t = now_micros();
    s.insert_api_key(&key("k1", "h1", t)).await.unwrap();
    s.insert_api_key(&key("k2", "h2", t + 1)).await.unwrap();
    assert!(s.insert_api_key(&key("k3", "h1", t)).await.is_err(), "hashes are unique");
    let listed = s.list_api_keys().await.unwrap();
    assert_eq!(listed.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["k2", "k1"], "newest first");
    assert_eq!(listed[0].limits, key("k2", "h2", t).limits, "limits read back");

    // limits: a rename keeps them, a new set replaces them, unlimited is stored as NULL
    let renamed = KeyUpdate { name: Some("renamed".into()), limits: None };
    assert!(s.update_api_key("k1", &renamed, t + 5).await.unwrap());
    let k1 = s.get_api_key("k1").await.unwrap().unwrap();
    assert_eq!((k1.name.as_str(), k1.limits, k1.updated_at), ("renamed", key("k1", "h1", t).limits, t + 5));
    let tighter = Limits { requests_per_minute: None, concurrent_runs: Some(2), tokens_per_day: None };
    assert!(s.update_api_key("k1", &KeyUpdate { name: None, limits: Some(tighter) }, t + 6).await.unwrap());
    assert_eq!(s.get_api_key("k1").await.unwrap().unwrap().limits, tighter);
    let unlimited = KeyUpdate { name: None, limits: Some(Limits::default()) };
    assert!(s.update_api_key("k1", &unlimited, t + 7).await.unwrap());
    assert!(s.get_api_key("k1").await.unwrap().unwrap().limits.is_unlimited());
    assert!(!s.update_api_key("nope", &renamed, t).await.unwrap());

    // usage: added to, never overwritten; ranges are inclusive and oldest first
    let row = |k: &str, day: &str, n: i64| UsageRow {
        key_id: k.into(),
        day: day.into(),
        counts: UsageCounts {
            requests: n,
            runs: 1,
            prompt_tokens: 10 * n,
            completion_tokens: n,
            audio_in_ms: 5,
            audio_out_ms: 0,
        },
    };
    s.add_usage(&[row("k1", "2026-11-30", 1), row("k1", "2026-12-01", 2), row("k2", "2026-12-01", 7)]).await.unwrap();
    s.add_usage(&[row("k1", "2026-12-01", 3)]).await.unwrap();
    s.add_usage(&[]).await.unwrap();
    let got = s.key_usage("k1", "2026-11-01", "2026-12-31").await.unwrap();
    assert_eq!(got.iter().map(|r| r.day.as_str()).collect::<Vec<_>>(), ["2026-11-30", "2026-12-01"]);
    assert_eq!(
        got[1].counts,
        UsageCounts { requests: 5, runs: 2, prompt_tokens: 50, completion_tokens: 5, audio_in_ms: 10, audio_out_ms: 0 }
    );
    assert_eq!(s.key_usage("k1", "2026-12-01", "2026-12-01").await.unwrap().len(), 1);
    assert!(s.key_usage("k3", "2026-11-01", "2026-12-31").await.unwrap().is_empty());
    let k1 = s.find_api_key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(
        (k1.scopes.clone(), k1.username.as_deref(), k1.expires_at),
        (vec!["chat".to_string(), "file".to_string()], Some("alice"), Some(t + 1_000_000))
    );
    s.touch_api_keys(&[("k1".into(), t + 5), ("k2".into(), t + 7)]).await.unwrap();
    s.touch_api_keys(&[("k1".into(), t + 3)]).await.unwrap();
    assert_eq!(s.get_api_key("k1").await.unwrap().unwrap().last_used_at, Some(t + 5), "never moves back");
    assert!(s.revoke_api_key("k1", t + 9).await.unwrap());
    assert_eq!(s.get_api_key("k1").await.unwrap().unwrap().revoked_at, Some(t + 9));
    assert!(!s.revoke_api_key("nope", t).await.unwrap());
    assert!(s.delete_api_key("k2").await.unwrap());
    assert!(!s.delete_api_key("k2").await.unwrap());
    assert!(s.find_api_key_by_hash("h2").await.unwrap().is_none());

    // sessions
    assert!(s.create_session(&SessionRecord::new("s1", "webchat", "alice")).await.unwrap());
    assert!(!s.create_session(&SessionRecord::new("s1", "webchat", "bob")).await.unwrap());
    assert_eq!(s.get_session("s1").await.unwrap().unwrap().creator, "alice");
    assert!(s.create_session(&SessionRecord::new("s2", "stage", "")).await.unwrap());
    assert!(s.claim_session("s2", "alice").await.unwrap());
    assert!(!s.claim_session("s2", "bob").await.unwrap(), "an owned session cannot be claimed");
    s.set_session_profile("s1", Some("p1")).await.unwrap();
    s.set_session_display_name("s1", Some("Title")).await.unwrap();
    s.set_session_display_name("s1", None).await.unwrap();
    let s1 = s.get_session("s1").await.unwrap().unwrap();
    assert_eq!((s1.profile_id.as_deref(), s1.display_name.as_deref()), (Some("p1"), Some("Title")));
    let group = SessionRecord { is_group: true, ..SessionRecord::new("s3", "webchat", "alice") };
    s.create_session(&group).await.unwrap();
    assert!(s.get_session("s3").await.unwrap().unwrap().is_group);

    // messages: an insert moves its session to the top
    let (m1, at1) = s.insert_message(&msg("s2", "one")).await.unwrap();
    let (m2, _) = s.insert_message(&msg("s2", "two")).await.unwrap();
    let (m3, _) = s.insert_message(&msg("s2", "three")).await.unwrap();
    assert!(m1 < m2 && m2 < m3);
    assert!(s.get_session("s2").await.unwrap().unwrap().updated_at >= at1);
    let page = s.list_sessions("alice", None, 0, 10).await.unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(page.items[0].session_id, "s2", "most recently updated first");
    let stage = s.list_sessions("alice", Some("stage"), 0, 10).await.unwrap();
    assert_eq!((stage.total, stage.items.len()), (1, 1));
    assert_eq!(s.list_sessions("alice", None, 1, 1).await.unwrap().items.len(), 1);
    assert!(s.insert_message(&msg("missing", "x")).await.is_err(), "messages need their session");

    s.update_message(m2, &json!({"type": "bot", "message": [], "streaming": true})).await.unwrap();
    s.rewrite_message(m1, &json!({"type": "user", "message": [{"type": "plain", "text": "edited"}]}), "ck-new")
        .await
        .unwrap();
    let first = s.get_message(m1).await.unwrap().unwrap();
    assert_eq!(
        (first.content["message"][0]["text"].as_str(), first.llm_checkpoint_id.as_deref()),
        (Some("edited"), Some("ck-new"))
    );
    let oldest = s.list_messages("s2", 0, 2, false).await.unwrap();
    assert_eq!((oldest.total, oldest.items.iter().map(|m| m.id).collect::<Vec<_>>()), (3, vec![m1, m2]));
    let newest = s.list_messages("s2", 0, 1, true).await.unwrap();
    assert_eq!(newest.items[0].id, m3);
    let recent = s.recent_messages("s2", 2).await.unwrap();
    assert_eq!(recent.iter().map(|m| m.id).collect::<Vec<_>>(), [m2, m3], "oldest first");

    // runs and what a crash leaves in flight
    s.insert_run(&run("r1", "s2", "running", t)).await.unwrap();
    s.insert_run(&run("r2", "s2", "done", t - 100)).await.unwrap();
    let (running, streaming) = s.in_flight().await.unwrap();
    assert_eq!(running.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["r1"]);
    assert_eq!(running[0].instance_id.as_deref(), Some("inst-a"));
    assert_eq!(streaming.iter().map(|m| m.id).collect::<Vec<_>>(), [m2]);
    let mut done = run("r1", "s2", "done", t + 1);
    done.message_id = Some(m3);
    s.insert_run(&done).await.unwrap();
    let r1 = s.get_run("r1").await.unwrap().unwrap();
    assert_eq!((r1.status.as_str(), r1.message_id, r1.events.as_str()), ("done", Some(m3), done.events.as_str()));
    assert_eq!(s.purge_runs(t - 50).await.unwrap(), 1);
    assert!(s.get_run("r2").await.unwrap().is_none());

    // attachments and their bytes in chunks
    let att = AttachmentRecord {
        attachment_id: "a1".into(),
        stored_name: "20260101_abcd_photo.png".into(),
        original_name: "photo.png".into(),
        kind: "image".into(),
        mime_type: "image/png".into(),
        size: 5,
        sha256: "00".into(),
        created_at: t,
        owner: Some("key:k1".into()),
    };
    s.insert_attachment(&att).await.unwrap();
    assert!(s.insert_attachment(&AttachmentRecord { attachment_id: "a2".into(), ..att.clone() }).await.is_err());
    assert_eq!(s.get_attachment("a1").await.unwrap().unwrap().owner.as_deref(), Some("key:k1"));
    assert_eq!(s.get_attachment_by_stored_name(&att.stored_name).await.unwrap().unwrap().attachment_id, "a1");
    let big = vec![7u8; 300_000];
    s.put_chunk("a1", 0, &big).await.unwrap();
    s.put_chunk("a1", 1, b"tail").await.unwrap();
    assert_eq!(s.get_chunk("a1", 0).await.unwrap().as_deref(), Some(&big[..]));
    assert_eq!(s.get_chunk("a1", 1).await.unwrap().as_deref(), Some(&b"tail"[..]));
    assert_eq!(s.get_chunk("a1", 2).await.unwrap(), None);

    // session variables
    s.set_session_var("s1", "city", "Paris").await.unwrap();
    s.set_session_var("s1", "age", "30").await.unwrap();
    s.set_session_var("s1", "city", "Lyon").await.unwrap();
    assert_eq!(s.session_vars("s1").await.unwrap(), vec![("age".into(), "30".into()), ("city".into(), "Lyon".into())]);

    // the audit log: newest first by id, paged below an id, purged by time; batches larger than
    // one INSERT statement (500 rows) keep their order
    assert!(s.list_audit_events(None, 10).await.unwrap().is_empty());
    s.insert_audit_events(&[]).await.unwrap();
    let base = t - 10_000;
    let failures: Vec<AuditEvent> = (0..1200).map(|i| audit(base + i, "login_failed", None)).collect();
    s.insert_audit_events(&failures).await.unwrap();
    let created = AuditEvent {
        ip: None,
        detail: Some(json!({"name": "n", "scopes": ["chat"], "username": null})),
        ..audit(t, "api_key.create", Some("k1"))
    };
    s.insert_audit_events(std::slice::from_ref(&created)).await.unwrap();
    let first = s.list_audit_events(None, 3).await.unwrap();
    assert_eq!(first[0].event, created, "read back exactly, detail and null ip included");
    assert_eq!((first[1].event.time, first[2].event.time), (base + 1199, base + 1198));
    let older = s.list_audit_events(Some(first[2].id), 1000).await.unwrap();
    assert_eq!((older.len(), older[0].event.time, older[999].event.time), (1000, base + 1197, base + 198));
    let all = s.list_audit_events(None, 5000).await.unwrap();
    assert_eq!(all.len(), 1201);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id && w[0].event.time > w[1].event.time), "ids follow the order");
    assert_eq!(s.purge_audit_events(base + 600).await.unwrap(), 600);
    assert_eq!(s.count_rows(Table::AuditEvents).await.unwrap(), 601);
    assert_eq!(s.list_audit_events(None, 5000).await.unwrap().last().unwrap().event.time, base + 600);

    // counts and export pages
    assert_eq!(s.count_rows(Table::Messages).await.unwrap(), 3);
    assert_eq!(s.count_rows(Table::AttachmentChunks).await.unwrap(), 2);
    assert_eq!(s.export_rows(Table::Messages, 1, 10).await.unwrap().len(), 2);

    // deleting a session takes its messages, runs and variables along
    assert!(s.delete_session("s2").await.unwrap());
    assert!(s.get_run("r1").await.unwrap().is_none());
    assert_eq!(s.list_messages("s2", 0, 10, false).await.unwrap().total, 0);
    assert_eq!(s.delete_session_vars("s1").await.unwrap(), 2);
    assert!(!s.delete_session("s2").await.unwrap());
    s.delete_chunks("a1").await.unwrap();
    s.delete_attachment("a1").await.unwrap();
    assert!(s.get_chunk("a1", 0).await.unwrap().is_none() && s.get_attachment("a1").await.unwrap().is_none());
    assert!(!s.writes_failing());
    s.close().await;
}

#[tokio::test]
async fn store_suite_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise(sqlite(&dir).await).await;
}

#[tokio::test]
async fn store_suite_postgres() {
    let Some(db) = fresh_postgres("store_suite_postgres").await else { return };
    exercise(store::connect(&db.url).await.unwrap()).await;
    // Migrations are applied once: connecting again finds them done.
    store::connect(&db.url).await.unwrap().ping().await.unwrap();
}

/// A small installation: sessions, messages (with a gap in the ids), runs, keys, settings,
/// attachments with chunks, variables.
async fn populate(s: &dyn Store) -> i64 {
    let t = now_micros();
    s.put_setting("jwt_secret", "abc").await.unwrap();
    s.insert_api_key(&key("k1", "h1", t)).await.unwrap();
    let usage = UsageCounts {
        requests: 3,
        runs: 2,
        prompt_tokens: 40,
        completion_tokens: 9,
        audio_in_ms: 1500,
        audio_out_ms: 700,
    };
    s.add_usage(&[UsageRow { key_id: "k1".into(), day: "2026-12-01".into(), counts: usage }]).await.unwrap();
    let mut last = 0;
    for i in 0..30 {
        let sid = format!("s{i:02}");
        s.create_session(&SessionRecord::new(&sid, "webchat", "alice")).await.unwrap();
        for j in 0..3 {
            last = s.insert_message(&msg(&sid, &format!("{i}-{j}"))).await.unwrap().0;
        }
        s.insert_run(&run(&format!("r{i:02}"), &sid, "done", t)).await.unwrap();
        s.set_session_var(&sid, "k", "v").await.unwrap();
    }
    s.set_session_display_name("s00", Some("renamed later")).await.unwrap();
    let att = AttachmentRecord {
        attachment_id: "a1".into(),
        stored_name: "stored_a1".into(),
        original_name: "a.bin".into(),
        kind: "file".into(),
        mime_type: "application/octet-stream".into(),
        size: 3,
        sha256: "x".into(),
        created_at: t,
        owner: None,
    };
    s.insert_attachment(&att).await.unwrap();
    s.put_chunk("a1", 0, b"abc").await.unwrap();
    let events: Vec<AuditEvent> = (0..1100).map(|i| audit(t + i, "api_key.revoke", Some("k1"))).collect();
    s.insert_audit_events(&events).await.unwrap();
    last
}

async fn check_copy(from: Arc<dyn Store>, to: Arc<dyn Store>) {
    let last = populate(from.as_ref()).await;
    let counts = store::copy::copy_all(from.as_ref(), to.as_ref(), |_| {}).await.unwrap();
    let by = |t: Table| counts.iter().find(|c| c.table == t).map(|c| (c.source, c.destination)).unwrap();
    assert_eq!(by(Table::Messages), (90, 90));
    assert_eq!(by(Table::Sessions), (30, 30));
    assert_eq!(by(Table::AttachmentChunks), (1, 1));
    assert_eq!(by(Table::AuditEvents), (1100, 1100));
    let (a, b) = (from.list_audit_events(None, 2000).await.unwrap(), to.list_audit_events(None, 2000).await.unwrap());
    assert_eq!(a, b, "the audit log is copied with its ids");
    // Everything reads back the same, ids and timestamps included.
    for sid in ["s00", "s17", "s29"] {
        assert_eq!(from.get_session(sid).await.unwrap(), to.get_session(sid).await.unwrap(), "{sid}");
        let (a, b) =
            (from.list_messages(sid, 0, 10, false).await.unwrap(), to.list_messages(sid, 0, 10, false).await.unwrap());
        assert_eq!(
            a.items.iter().map(|m| (m.id, m.content.clone(), m.created_at)).collect::<Vec<_>>(),
            b.items.iter().map(|m| (m.id, m.content.clone(), m.created_at)).collect::<Vec<_>>()
        );
    }
    assert_eq!(to.get_chunk("a1", 0).await.unwrap().as_deref(), Some(&b"abc"[..]));
    assert_eq!(to.get_setting("jwt_secret").await.unwrap().as_deref(), Some("abc"));
    assert_eq!(by(Table::KeyUsage), (1, 1));
    assert_eq!(
        from.key_usage("k1", "2026-12-01", "2026-12-01").await.unwrap(),
        to.key_usage("k1", "2026-12-01", "2026-12-01").await.unwrap()
    );
    assert_eq!(to.get_api_key("k1").await.unwrap().unwrap().limits, key("k1", "h1", 0).limits);
    // New messages continue after the copied ids.
    let (id, _) = to.insert_message(&msg("s05", "after")).await.unwrap();
    assert!(id > last, "{id} > {last}");
    to.insert_audit_events(&[audit(now_micros(), "login", None)]).await.unwrap();
    let newest = to.list_audit_events(None, 1).await.unwrap().remove(0);
    assert!(newest.id > a[0].id && newest.event.action == "login", "{} > {}", newest.id, a[0].id);
    // A second copy into the same destination is refused.
    let again = store::copy::copy_all(from.as_ref(), to.as_ref(), |_| {}).await;
    assert!(matches!(again, Err(store::copy::CopyError::NotEmpty("settings"))), "{again:?}");
}

#[tokio::test]
async fn copy_db_sqlite_to_postgres_and_back() {
    let Some(pg) = fresh_postgres("copy_db_sqlite_to_postgres_and_back").await else { return };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    check_copy(sqlite(&d1).await, store::connect(&pg.url).await.unwrap()).await;
    let Some(pg2) = fresh_postgres("copy_db_postgres_to_sqlite").await else { return };
    check_copy(store::connect(&pg2.url).await.unwrap(), sqlite(&d2).await).await;
}

/// The real binary: `astrgate migrate` on PostgreSQL, then `copy-db` from SQLite into it, with
/// the password kept out of what it prints.
#[tokio::test]
async fn migrate_and_copy_db_commands() {
    let Some(pg) = fresh_postgres("migrate_and_copy_db_commands").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let bin = crate::cli::BIN;
    let src = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let s = store::connect(&src).await.unwrap();
        populate(s.as_ref()).await;
        s.close().await;
    }
    // An attachment whose bytes are a file in the old data dir.
    {
        let s = store::connect(&src).await.unwrap();
        let rec = AttachmentRecord {
            attachment_id: "a2".into(),
            stored_name: "20260101_beef_voice.wav".into(),
            original_name: "voice.wav".into(),
            kind: "record".into(),
            mime_type: "audio/wav".into(),
            size: 300_000,
            sha256: "x".into(),
            created_at: now_micros(),
            owner: None,
        };
        s.insert_attachment(&rec).await.unwrap();
        s.close().await;
    }
    let file: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    std::fs::create_dir_all(dir.path().join("attachments")).unwrap();
    std::fs::write(dir.path().join("attachments/20260101_beef_voice.wav"), &file).unwrap();
    let with_password = pg.url.replacen("astrgate@", "astrgate:secret-pw@", 1);
    let out = tokio::process::Command::new(bin)
        .arg("migrate")
        .env("ASTRGATE_DATABASE_URL", &with_password)
        .env("ASTRGATE_DATA_DIR", dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("migrations applied to postgres://***@") && !stdout.contains("secret-pw"), "{stdout}");
    let attachments = dir.path().join("attachments");
    let out = tokio::process::Command::new(bin)
        .args(["copy-db", "--from", &src, "--to", &with_password, "--attachments-dir"])
        .arg(&attachments)
        .env("ASTRGATE_DATA_DIR", dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("row counts match") && !stdout.contains("secret-pw"), "{stdout}");
    assert!(stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["messages", "90", "90"]), "{stdout}");
    assert!(stdout.contains("attachment files moved into the database: 1"), "{stdout}");
    let pgs = store::connect(&pg.url).await.unwrap();
    let mut moved = pgs.get_chunk("a2", 0).await.unwrap().unwrap();
    moved.extend(pgs.get_chunk("a2", 1).await.unwrap().unwrap());
    assert_eq!(moved, file);
    pgs.close().await;
    // Copying again is refused: the destination is not empty.
    let out = tokio::process::Command::new(bin)
        .args(["copy-db", "--from", &src, "--to", &pg.url])
        .env("ASTRGATE_DATA_DIR", dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds data"));
}
