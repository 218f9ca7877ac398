//! The `astrgate` binary: parse the command line and hand over to [`astrgate::cli`].

/// jemalloc instead of glibc's malloc: glibc spent ~13 % of a busy server's CPU in malloc/free
/// and consolidation (docs/performance.md). mimalloc was faster still but tripled idle RSS.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    astrgate::cli::main()
}
