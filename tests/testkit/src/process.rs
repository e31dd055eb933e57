//! Child processes that die with the test, and loopback port helpers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free on 127.0.0.1 a moment ago, for a server a test starts later.
///
/// Chosen at random below the kernel's ephemeral range (and below [`FLEET_PORTS_FROM`]): a port from that range (what binding
/// port 0 returns) can be handed to any process binding port 0 — a simulator, a client —
/// between this call and the server's bind, which made tests fail with "address in use" or
/// talk to the wrong server. Ports already handed out by this process are not reused.
pub fn free_port() -> u16 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let (low, high) = below_ephemeral_range();
    let random = RandomState::new();
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for attempt in 0u32..1000 {
        let port = low + (random.hash_one(attempt) % u64::from(high - low)) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

/// Where simulated fleets bind their devices (`--search-from`): from here up to the
/// ephemeral range, apart from the ports [`free_port`] hands out.
pub const FLEET_PORTS_FROM: u16 = 20_000;

/// `[10000, 20000)`, cut at the start of the ephemeral range when that is lower.
fn below_ephemeral_range() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|start| *start > 12_000)
        .unwrap_or(32_768);
    (10_000, start.min(FLEET_PORTS_FROM))
}

/// Raises this process's open-file limit to at least `wanted` (children inherit it): a
/// fleet of 10 000 simulated devices holds a listener and an accepted connection per device
/// in one process. The soft limit goes up to the hard one; the hard one goes up too when
/// the process may (root). Returns the soft limit in force afterwards.
pub fn raise_fd_limit(wanted: u64) -> anyhow::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if soft >= wanted {
        return Ok(soft);
    }
    let raised = Rlimit {
        current: Some(wanted),
        maximum: Some(hard.max(wanted)),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return Ok(wanted);
    }
    let soft_only = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    setrlimit(Resource::Nofile, soft_only)
        .map_err(|e| anyhow::anyhow!("setrlimit(RLIMIT_NOFILE, {hard}): {e}"))?;
    Ok(hard)
}

/// Resident memory of process `pid` (`VmRSS` in `/proc/<pid>/status`), in bytes.
pub fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_tcp(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("nothing listening on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The `gnomon` binary built next to the running test executable
/// (`target/<profile>/gnomon`; `GNOMON_BIN` overrides). `scripts/test` builds it first.
pub fn gnomon_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("GNOMON_BIN") {
        return Ok(PathBuf::from(path));
    }
    workspace_binary("gnomon")
}

/// Starts `gnomon <service>` on `config` (written to `<dir>/<name>.yaml`) with its API on a
/// free loopback port; its log goes to `dir`.
pub fn spawn_gnomon(
    dir: &Path,
    name: &str,
    service: &str,
    config: &str,
) -> anyhow::Result<ChildProcess> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config)?;
    let mut command = Command::new(gnomon_binary()?);
    command
        .args([service, "--config"])
        .arg(&path)
        .env("GNMIC_API", format!("127.0.0.1:{}", free_port()));
    ChildProcess::spawn(name, command, dir)
}

/// A binary of this workspace (e.g. `consul-double`) built next to the running test
/// executable; `cargo build --workspace` builds them all.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(Path::to_path_buf);
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
    }
    anyhow::bail!("{name} binary not found next to {exe:?}: run `cargo build --workspace` first")
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
/// Its stdout and stderr go to `<log_dir>/<name>.log`.
pub struct ChildProcess {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl ChildProcess {
    /// Spawns `command`, sending its output to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name} ({command:?}): {e}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log_path,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`, `libc::SIGKILL`, `libc::SIGSTOP`).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            signal_pid(child.id(), signal);
        }
    }

    /// Freezes the process (SIGSTOP) and returns once every thread of it is stopped: the
    /// kernel stops a thread running on another CPU asynchronously, so a request sent right
    /// after `kill` may still be answered. Panics if it has not stopped within 10 s.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "{}: process {pid} did not stop within 10 s of SIGSTOP",
                self.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILLs the process and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the process and waits up to `timeout` for it to exit (then SIGKILL).
    /// Returns the exit code when it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether every thread of `pid` is in the stopped state (`T`) per `/proc/<pid>/task/*/stat`;
/// false when the process is gone or unreadable.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return false;
        };
        // `tid (comm) S …`: the state follows the last `)` (comm may hold anything).
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next());
        if !matches!(state, Some("T") | Some("t")) {
            return false;
        }
        any = true;
    }
    any
}

/// Sends `signal` (e.g. `libc::SIGCONT`) to the process `pid`, one the test started and has
/// not reaped (so the pid cannot have been reused). Errors (the process is gone) are ignored.
pub fn signal_pid(pid: u32, signal: i32) {
    let Some(signal) = rustix::process::Signal::from_named_raw(signal) else {
        panic!("signal_pid: {signal} is not a signal");
    };
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _gone = rustix::process::kill_process(pid, signal);
    }
}
