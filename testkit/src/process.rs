//! A service binary run as a real process by a test: its environment
//! exactly what the test gives, its output kept in a log file, killed when
//! dropped so a failing test leaves nothing behind. The cross-service
//! harness (`hushmap_tests::processes::ServiceSet`) runs the three services
//! this way, and ingest's tests their binary (`IngestProcess`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running service; killed (SIGKILL) when dropped.
pub struct ServiceProcess {
    pub name: String,
    /// Where its stdout and stderr go (appended across restarts).
    pub log: PathBuf,
    binary: PathBuf,
    envs: Vec<(String, String)>,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `binary` with exactly `envs` (the test's own environment is
    /// not passed on, but for `PATH`), stdout and stderr appended to
    /// `<log_dir>/<name>.log`.
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

    /// Everything it wrote to stdout and stderr so far (every run of it).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last `lines` lines of its log, for a failing test's report.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.output();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
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
        self.terminate_with_status(grace)
            .is_some_and(|status| status.success())
    }

    /// SIGTERM, then waits up to `grace` for it to exit (SIGKILL after):
    /// how it exited, or `None` if it had to be killed (or was not
    /// running).
    pub fn terminate_with_status(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let exited = crate::wait_until_blocking(
            &format!("{} to exit after SIGTERM", self.name),
            grace,
            || Ok(child.try_wait().ok().flatten()),
        );
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        exited.ok()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
