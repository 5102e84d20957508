//! The embedded default: a private PostgreSQL cluster in the data directory, started from the
//! machine's PostgreSQL binaries. As root the cluster runs as the `postgres` system user
//! (PostgreSQL refuses root); it listens only on a Unix socket in a 0700 directory, so only
//! its owner (and root) can connect, and no password exists to leak.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgConnectOptions;

/// A cluster directory and the user it runs as.
#[derive(Clone)]
pub struct Cluster {
    pub root: PathBuf,
    run_as: Option<String>,
    bin: PathBuf,
}

impl Cluster {
    /// Describes the cluster under `data_dir` (`pg/` and `run/`); nothing is started yet.
    pub fn new(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let root = std::fs::canonicalize(data_dir)?;
        let run_as = is_root().then(|| "postgres".to_string());
        Ok(Self { root, run_as, bin: find_bin_dir()? })
    }

    fn pgdata(&self) -> PathBuf {
        self.root.join("pg")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// Connection options for database `db` over the private socket.
    pub fn connect_options(&self, db: &str) -> PgConnectOptions {
        let user = self.run_as.clone().unwrap_or_else(current_user);
        PgConnectOptions::new().socket(self.socket_dir()).port(5432).username(&user).database(db)
    }

    /// A `DATABASE_URL` for database `db` over the private socket.
    pub fn url(&self, db: &str) -> String {
        let user = self.run_as.clone().unwrap_or_else(current_user);
        format!("postgres://{user}@localhost/{db}?host={}", self.socket_dir().display())
    }

    /// Initialises the cluster if needed and starts it unless it is already running; true when
    /// this call started it.
    pub fn ensure_running(&self) -> Result<bool> {
        self.ensure_running_with("")
    }

    /// As `ensure_running`, with extra server options (`-c name=value …`) for this start.
    pub fn ensure_running_with(&self, extra: &str) -> Result<bool> {
        if !self.pgdata().join("PG_VERSION").exists() {
            self.init()?;
        }
        if self.is_running() {
            return Ok(false);
        }
        if self.postmaster_pid().is_some() {
            // The lock files of a dead (or zombie) postmaster, which a new one would take for
            // a live one's.
            let _ = std::fs::remove_file(self.pgdata().join("postmaster.pid"));
            let _ = std::fs::remove_file(self.socket_dir().join(".s.PGSQL.5432.lock"));
        }
        let log = self.root.join("postgres.log");
        if let Some(user) = &self.run_as {
            chown_file(&log, user)?;
        }
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c unix_socket_permissions=0700 -c max_connections=200 -c fsync=on {extra}",
            self.socket_dir().display()
        );
        let status = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.pgdata())
            .args(["-l"])
            .arg(&log)
            .args(["-o", &opts, "-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !status.status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("PostgreSQL did not start; its log ({}) ends:\n{}", log.display(), last_lines(&tail, 15));
        }
        Ok(true)
    }

    /// Registers this process as a user of the cluster, starting it if it is down. Every
    /// process using the private cluster (servers, workers, CLI commands) holds a shared lock
    /// on `locks/users.lock` for as long as it uses it; starting and stopping happen under an
    /// exclusive `locks/start.lock`, so two processes never start it twice, and the last user out
    /// stops it (and only a cluster a rewardlab process started: one started by hand is left
    /// running). Dropping the [`ClusterUse`] releases it on every exit path.
    pub fn acquire(&self) -> Result<ClusterUse> {
        let _start = self.start_lock()?;
        let users = self.lock_file("users.lock")?;
        users.lock_shared().context("locking the cluster's users file")?;
        // On failure `users` is dropped (this process is no user) while the start lock is held.
        self.start_if_down_locked()?;
        Ok(ClusterUse { cluster: self.clone(), users: Some(users) })
    }

    fn lock_file(&self, name: &str) -> Result<std::fs::File> {
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir)?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(name))
            .with_context(|| format!("opening {}", dir.join(name).display()))
    }

    fn start_lock(&self) -> Result<std::fs::File> {
        let f = self.lock_file("start.lock")?;
        f.lock().context("locking the cluster's start file")?;
        Ok(f)
    }

    fn owned_marker(&self) -> PathBuf {
        self.root.join("locks").join("started-by-rewardlab")
    }

    /// Starts the cluster if no postmaster answers (after a crash or a kill, too); true when
    /// this call started it. Serialised with every other start and stop.
    pub fn start_if_down(&self) -> Result<bool> {
        let _start = self.start_lock()?;
        self.start_if_down_locked()
    }

    fn start_if_down_locked(&self) -> Result<bool> {
        if self.is_running() {
            return Ok(false);
        }
        // The marker goes first: a start that times out while the postmaster goes on starting
        // (a long crash recovery) still leaves a cluster rewardlab started.
        std::fs::write(self.owned_marker(), std::process::id().to_string())?;
        // A postmaster killed a moment ago may leave backends that still hold its shared
        // memory for a few hundred milliseconds; they exit by themselves, so a failed start is
        // tried again.
        let mut tries = 0;
        loop {
            match self.ensure_running() {
                Ok(started) => return Ok(started),
                Err(e) if self.is_running() => return Err(e),
                Err(e) if tries < 20 => {
                    tries += 1;
                    log::warn!("PostgreSQL did not start yet (try {tries}): {e:#}");
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(self.owned_marker());
                    return Err(e);
                }
            }
        }
    }

    fn init(&self) -> Result<()> {
        for dir in [self.pgdata(), self.socket_dir()] {
            std::fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o700)?;
            if let Some(user) = &self.run_as {
                chown_dir(&dir, user)?;
            }
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.pgdata())
            .args(["--auth=peer", "--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--locale=C"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Whether the cluster's postmaster is alive. A killed postmaster whose parent has not
    /// reaped it yet (a zombie, common in containers) counts as dead: `pg_ctl status` would
    /// call it running, and a new postmaster would refuse to start beside its pid file.
    pub fn is_running(&self) -> bool {
        if !Path::new("/proc/self/stat").exists() {
            return self.command("pg_ctl").arg("-D").arg(self.pgdata()).arg("status").output().map(|o| o.status.success()).unwrap_or(false);
        }
        self.postmaster_pid().is_some_and(process_alive)
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Stops the cluster with a fast shutdown (clean: everything committed is on disk).
    pub fn stop(&self) -> Result<()> {
        let status = self.command("pg_ctl").arg("-D").arg(self.pgdata()).args(["-m", "fast", "-w", "stop"]).output()?;
        // A postmaster that died meanwhile (killed, crashed) is stopped too.
        if !status.status.success() && self.is_running() {
            bail!("pg_ctl stop failed: {}", String::from_utf8_lossy(&status.stderr));
        }
        Ok(())
    }

    /// Leaves behind a watchdog that stops the cluster (and removes its directory when
    /// `remove` is set) once process `pid` has exited; for test harnesses, which have no teardown.
    pub fn stop_when_process_exits(&self, pid: u32, remove: bool) -> Result<()> {
        let stop = self.command_line("pg_ctl");
        let rm = if remove { format!("rm -rf '{}'", self.root.display()) } else { String::new() };
        let script =
            format!("while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} -D '{}' -m immediate stop >/dev/null 2>&1; {rm}", self.pgdata().display());
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the cluster watchdog")?;
        Ok(())
    }

    fn command_line(&self, tool: &str) -> String {
        let exe = self.bin.join(tool).display().to_string();
        match &self.run_as {
            Some(user) => format!("runuser -u {user} -- {exe}"),
            None => exe,
        }
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.current_dir("/");
        cmd
    }
}

/// This process's use of the private cluster (see [`Cluster::acquire`]).
pub struct ClusterUse {
    cluster: Cluster,
    users: Option<std::fs::File>,
}

impl ClusterUse {
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Stops using the cluster: the last user stops it if a rewardlab process started it.
    /// True when this call stopped it.
    pub fn release(mut self) -> Result<bool> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<bool> {
        let Some(users) = self.users.take() else { return Ok(false) };
        let _start = self.cluster.start_lock()?;
        // Converting the shared lock to an exclusive one succeeds only when nobody else uses it.
        let last = users.try_lock().is_ok();
        let owned = self.cluster.owned_marker().exists();
        drop(users);
        if !(last && owned) {
            return Ok(false);
        }
        if self.cluster.is_running() {
            self.cluster.stop()?;
        }
        let _ = std::fs::remove_file(self.cluster.owned_marker());
        Ok(true)
    }
}

impl Drop for ClusterUse {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            log::error!("stopping PostgreSQL: {e:#}");
        }
    }
}

/// Whether process `pid` exists and is not a zombie (Linux `/proc`).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn find_bin_dir() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                return Ok(dir);
            }
        }
    }
    let mut found: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect();
    found.sort();
    found.pop().context("no PostgreSQL binaries found (install Debian's `postgresql` package, or set DATABASE_URL)")
}

fn is_root() -> bool {
    // SAFETY-free: geteuid has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

fn current_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| {
        let out = Command::new("id").arg("-un").output().ok();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn chown_dir(path: &Path, user: &str) -> Result<()> {
    let status = Command::new("chown").args(["-R", user]).arg(path).status()?;
    if !status.success() {
        bail!("chown {} {} failed", user, path.display());
    }
    Ok(())
}

fn chown_file(path: &Path, user: &str) -> Result<()> {
    if !path.exists() {
        std::fs::write(path, b"")?;
    }
    set_mode(path, 0o600)?;
    chown_dir(path, user)
}
