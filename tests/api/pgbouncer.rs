//! Servers behind PgBouncer in transaction pooling, as a deployment with many servers puts
//! them: 2 servers × 16 connections multiplexed onto 4 server connections. PgBouncer ≥ 1.21
//! (`max_prepared_statements`) is needed: sqlx prepares named statements, which older
//! versions cannot route. `.ci/run` builds it from Debian's source package.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rewardlab::settings::{Secret, Settings};

use crate::helpers::spawn_app;
use crate::multi_server::two_servers_share_everything;

/// `REWARDLAB_PGBOUNCER`, else `pgbouncer` on the PATH, if it is 1.21 or newer. Outside CI a
/// missing one skips this test; in CI it fails it.
fn pgbouncer() -> Option<PathBuf> {
    let bin = std::env::var_os("REWARDLAB_PGBOUNCER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("pgbouncer"));
    let version = Command::new(&bin).arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let recent = version.split_whitespace().nth(1).and_then(|v| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Some((parts.next()?, parts.next()?))
    });
    if recent.is_some_and(|v| v >= (1, 21)) {
        return Some(bin);
    }
    eprintln!("no PgBouncer ≥ 1.21 ({}: {:?}): skipping; .ci/run builds one", bin.display(), version.trim());
    assert!(std::env::var_os("CI").is_none(), "PgBouncer ≥ 1.21 is missing: .ci/run builds it");
    None
}

/// A PgBouncer listening on a Unix socket in its own folder, in front of the database server
/// whose socket folder `server` is; stopped when dropped.
struct PgBouncer {
    child: Child,
    dir: PathBuf,
}

impl PgBouncer {
    fn start(bin: &PathBuf, server: &str, user: &str) -> PgBouncer {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ini = format!(
            "[databases]\n* = host={server}\n[pgbouncer]\nlisten_addr =\nunix_socket_dir = {dir}\nlisten_port = 6432\n\
             auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\nmax_prepared_statements = 200\n\
             default_pool_size = 4\nmax_client_conn = 200\nlogfile = {dir}/pgbouncer.log\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        // PgBouncer refuses root; setpriv execs it as the cluster's user (no process in between,
        // so killing the child stops PgBouncer itself).
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let mut cmd = if root {
            Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().unwrap();
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let child = cmd.arg(dir.join("pgbouncer.ini")).spawn().expect("pgbouncer starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join(".s.PGSQL.6432").exists() {
            assert!(Instant::now() < deadline, "PgBouncer did not open its socket: {}", std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer { child, dir }
    }

    fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@localhost:6432/{db}?host={}", self.dir.display())
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_behind_pgbouncer_in_transaction_pooling_lose_and_double_nothing() {
    let Some(bin) = pgbouncer() else { return };
    let app = spawn_app().await;
    // The test database's URL: postgres://USER@localhost/DB?host=SOCKETS.
    let url = url_parts(&app.db_url);
    let bouncer = PgBouncer::start(&bin, &url.host, &url.user);
    let settings = Settings {
        data_dir: app.tmp.join("unused"),
        database_url: Some(Secret::new(bouncer.url(&url.user, &url.db))),
        database_direct_url: Some(Secret::new(app.db_url.clone())),
        session_key: None,
    };
    let (one, _) = settings.connect().await.expect("connects through PgBouncer, migrating over the direct URL");
    let (two, _) = settings.connect().await.unwrap();
    let plan: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&one).await.unwrap();
    assert_eq!(plan, "force_generic_plan", "set on the database, since a pooler passes no startup options");
    let jit: String = sqlx::query_scalar("SHOW jit").fetch_one(&one).await.unwrap();
    assert_eq!(jit, "off", "set on the database, since a pooler passes no startup options");
    let a = app.server_on(one, "bounced-a");
    let b = app.server_on(two, "bounced-b");
    two_servers_share_everything(&a, &b).await;
    drop(bouncer);
}

struct UrlParts {
    user: String,
    db: String,
    host: String,
}

fn url_parts(url: &str) -> UrlParts {
    let rest = url.strip_prefix("postgres://").unwrap();
    let (user, rest) = rest.split_once("@localhost/").unwrap();
    let (db, host) = rest.split_once("?host=").unwrap();
    UrlParts { user: user.into(), db: db.into(), host: host.into() }
}
