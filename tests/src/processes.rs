//! The services as real processes, for tests that kill, restart or measure
//! them: the binaries `cargo test --workspace` builds next to the test
//! executables, logs captured to files, RSS read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path of a workspace binary built by this `cargo test` run
/// (`target/<profile>/<name>`).
pub fn service_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("test executable has no target directory"))?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace` (deploy/test.sh does)",
        path.display()
    );
    Ok(path)
}

/// A free loopback port (bound and released; a race with another process
/// is possible but unlikely on a test machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running service; killed (SIGKILL) when dropped so a failing test
/// leaves nothing behind.
pub struct ServiceProcess {
    pub name: String,
    pub log: PathBuf,
    binary: PathBuf,
    envs: Vec<(String, String)>,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `binary` with exactly `envs` (the test's own environment is
    /// not passed on), stdout and stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        binary: &Path,
        envs: Vec<(String, String)>,
        log_dir: &Path,
    ) -> anyhow::Result<ServiceProcess> {
        std::fs::create_dir_all(log_dir)?;
        let mut process = ServiceProcess {
            name: name.to_string(),
            log: log_dir.join(format!("{name}.log")),
            binary: binary.to_path_buf(),
            envs,
            child: None,
        };
        process.start()?;
        Ok(process)
    }

    /// Starts the process again after [`kill9`](Self::kill9) or
    /// [`terminate`](Self::terminate), same settings, same log file.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident set size in KiB (`VmRSS`), while running.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Whether the process is still running (not exited on its own).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (SIGKILL after);
    /// returns whether it exited successfully in time.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
