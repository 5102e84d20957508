//! The trainer as a child process: its metric lines (stdout) and log lines (stderr) go into
//! PostgreSQL as they come, heartbeats renew the lease meanwhile, and it is killed as soon as
//! the run is no longer ours.

use std::path::Path;

use anyhow::{Context, Result};
use rewardlab_protocol::MetricLine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::fence::{Fence, Owned};

/// How the trainer ended.
pub enum Child {
    /// The run stopped being ours; the trainer was killed.
    Lost,
    Exited {
        ok: bool,
        status: String,
        last_line: String,
        summary: Option<Value>,
    },
}

enum Event {
    Out(Option<String>),
    Err(Option<String>),
    Beat,
    Exit(std::io::Result<std::process::ExitStatus>),
}

/// Runs the trainer: metric lines (stdout) and log lines (stderr) into PostgreSQL as they
/// come, heartbeats meanwhile; kills it as soon as the run is no longer ours.
pub async fn run_child(f: &Fence<'_>, trainer: &Path, args: &[String]) -> Result<Child> {
    let mut cmd = command(trainer, args);
    f.log(&format!("[worker] $ rewardlab-train {}", args.join(" "))).await;
    let mut child = cmd.spawn().with_context(|| format!("starting {}", trainer.display()))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut beat = tokio::time::interval(f.lease / 3);
    beat.tick().await;
    let mut seen = Seen { out_open: true, err_open: true, last_line: String::new(), summary: None };
    loop {
        let event = tokio::select! {
            l = out.next_line(), if seen.out_open => Event::Out(l.ok().flatten()),
            l = err.next_line(), if seen.err_open => Event::Err(l.ok().flatten()),
            _ = beat.tick() => Event::Beat,
            s = child.wait(), if !seen.out_open && !seen.err_open => Event::Exit(s),
        };
        if let Event::Exit(status) = event {
            return Ok(seen.exited(status?));
        }
        if !seen.record(f, event).await {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Ok(Child::Lost);
        }
    }
}

/// The trainer's command: piped output, no secrets in its environment, killed with the worker.
fn command(trainer: &Path, args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(trainer);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .env_remove("DATABASE_URL")
        .env_remove("REWARDLAB_SESSION_KEY");
    die_with_parent(&mut cmd);
    cmd
}

/// What the worker has seen of a running trainer.
struct Seen {
    out_open: bool,
    err_open: bool,
    /// The last non-blank line on stderr: the error, when it fails.
    last_line: String,
    /// Its `done` line.
    summary: Option<Value>,
}

impl Seen {
    /// Records one event; false once the run is no longer ours.
    async fn record(&mut self, f: &Fence<'_>, event: Event) -> Owned {
        match event {
            Event::Out(None) => self.out_open = false,
            Event::Err(None) => self.err_open = false,
            Event::Out(Some(line)) => match MetricLine::parse(&line) {
                Some(m) => {
                    if m.is_done() {
                        self.summary = Some(m.data.clone());
                    }
                    return f.metric_line(&m).await;
                }
                None => return f.log(&line).await,
            },
            Event::Err(Some(line)) => {
                if !line.trim().is_empty() {
                    self.last_line = line.clone();
                }
                return f.log(&line).await;
            }
            Event::Beat => return f.heartbeat().await,
            Event::Exit(_) => {}
        }
        true
    }

    fn exited(self, status: std::process::ExitStatus) -> Child {
        let shown =
            status.code().map_or_else(|| format!("signal {}", std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)), |c| format!("status {c}"));
        Child::Exited { ok: status.success(), status: shown, last_line: self.last_line, summary: self.summary }
    }
}

/// Asks Linux to kill the trainer when the worker dies (a SIGKILLed worker must not leave a
/// trainer writing on), and gives it umask 077 so the models it writes are private.
/// Safety: `prctl` and `umask` are async-signal-safe and touch no memory.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
