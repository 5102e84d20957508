//! The rules of `migrations/` (see its README): landed migrations never change (their
//! checksums are committed in `migrations/checksums.txt`), each SQL function has one live
//! definition, the latest whole one in the migrations, and a database whose migrations this
//! build does not share is refused with a message saying why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rewardlab::cluster::Cluster;
use sha2::{Digest, Sha384};
use sqlx::{Connection, PgConnection, PgPool};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// The migration files, in version order, as sqlx reads them: `<version>_<name>.sql` directly
/// in `migrations/`. A `.sql` file sqlx would silently skip is an error.
fn migration_files() -> Vec<(i64, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sql") {
            continue;
        }
        let version = name.split_once('_').and_then(|(v, _)| v.parse::<i64>().ok());
        let version = version.unwrap_or_else(|| panic!("migrations/{name} is not named <version>_<name>.sql, so sqlx would skip it"));
        files.push((version, name));
    }
    files.sort();
    files
}

/// `migrations/checksums.txt`: `sha384sum` lines, `<hex>  <file name>`.
fn committed_checksums() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir().join("checksums.txt")).expect("migrations/checksums.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (hash, name) = l.split_once("  ").unwrap_or_else(|| panic!("checksums.txt: not `<hex>  <file>`: {l}"));
            (name.to_string(), hash.to_string())
        })
        .collect()
}

#[test]
fn landed_migrations_never_change_and_every_migration_is_listed() {
    let committed = committed_checksums();
    let files = migration_files();
    let mut problems = Vec::new();
    for (name, hash) in &committed {
        let Ok(sql) = std::fs::read(dir().join(name)) else {
            problems.push(format!(
                "migrations/{name} has landed but is gone. Restore it (`git checkout main -- migrations/{name}`): \
                 a database that ran it refuses to start without it. Change the schema in a new migration."
            ));
            continue;
        };
        // The same digest sqlx records for the migration and checks at every start.
        if hex::encode(Sha384::digest(&sql)) != *hash {
            problems.push(format!(
                "migrations/{name} changed after it landed. Restore it (`git checkout main -- migrations/{name}`) \
                 and put the change in a new migration: a database that ran it refuses to start when it changes."
            ));
        }
    }
    for (_, name) in &files {
        if !committed.contains_key(name) {
            problems.push(format!(
                "migrations/{name} is not in migrations/checksums.txt. Once it is final, add it: \
                 `(cd migrations && sha384sum {name} >> checksums.txt)`."
            ));
        }
    }
    let mut versions: Vec<i64> = files.iter().map(|(v, _)| *v).collect();
    versions.dedup();
    if versions.len() != files.len() {
        problems.push("two migrations share a version number".into());
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// A function statement in a migration: the (unqualified) names it creates or drops.
enum FunctionStatement {
    Create { name: String, body: String },
    Drop(Vec<String>),
}

/// The `CREATE [OR REPLACE] FUNCTION` and `DROP FUNCTION` statements of one migration, in order:
/// those that begin a line (comments and function bodies are not scanned as statements).
fn function_statements(file: &str, sql: &str) -> Vec<FunctionStatement> {
    let mut found = Vec::new();
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let upper = line.trim_start().to_uppercase();
        if upper.starts_with("ALTER FUNCTION") {
            panic!("{file}: ALTER FUNCTION: replace the function whole with CREATE OR REPLACE instead");
        }
        let head = ["CREATE OR REPLACE FUNCTION ", "CREATE FUNCTION "].into_iter().find(|h| upper.starts_with(h));
        if let Some(head) = head {
            let rest = &line.trim_start()[head.len()..];
            let name = unqualified(rest.split('(').next().unwrap());
            found.push(FunctionStatement::Create { body: dollar_quoted(file, &sql[start..]), name });
        } else if upper.starts_with("DROP FUNCTION ") {
            let statement = &sql[start..start + sql[start..].find(';').expect("DROP FUNCTION ends with ;")];
            found.push(FunctionStatement::Drop(dropped_names(statement)));
        }
    }
    found
}

fn unqualified(name: &str) -> String {
    let name = name.trim().trim_matches('"');
    name.rsplit('.').next().unwrap().to_lowercase()
}

/// The first dollar-quoted string in `sql` (a function's body, as PostgreSQL stores it).
fn dollar_quoted(file: &str, sql: &str) -> String {
    let open = sql.find('$').unwrap_or_else(|| panic!("{file}: a function body must be dollar-quoted"));
    let tag_len = sql[open + 1..].find('$').expect("a dollar-quote tag") + 2;
    let tag = &sql[open..open + tag_len];
    let body = &sql[open + tag_len..];
    body[..body.find(tag).unwrap_or_else(|| panic!("{file}: unterminated {tag}"))].to_string()
}

/// The names in `DROP FUNCTION [IF EXISTS] a(args), b(args) [CASCADE]`.
fn dropped_names(statement: &str) -> Vec<String> {
    let mut flat = String::new();
    let mut depth = 0;
    for c in statement.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => flat.push(c),
            _ => {}
        }
    }
    let words = flat.split_whitespace().skip(2).collect::<Vec<_>>().join(" ");
    let words = words.strip_prefix("IF EXISTS ").or(words.strip_prefix("if exists ")).unwrap_or(&words);
    words.split(',').map(|n| n.split_whitespace().next().unwrap_or_default()).filter(|n| !n.is_empty()).map(unqualified).collect()
}

/// Each live function's name and body, from the migrations' text: the latest definition wins,
/// a drop removes it.
fn live_functions_in_migrations() -> BTreeMap<String, (String, String)> {
    let mut live = BTreeMap::new();
    for (_, file) in migration_files() {
        let sql = std::fs::read_to_string(dir().join(&file)).unwrap();
        for statement in function_statements(&file, &sql) {
            match statement {
                FunctionStatement::Create { name, body } => {
                    live.insert(name, (file.clone(), body));
                }
                FunctionStatement::Drop(names) => names.iter().for_each(|n| {
                    live.remove(n);
                }),
            }
        }
    }
    live
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// A new, empty database in this test binary's private cluster.
async fn fresh_database() -> PgPool {
    let cluster = tokio::task::spawn_blocking(|| {
        CLUSTER.get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pg-migrations-{}", std::process::id()));
            let cluster = Cluster::new(&dir).expect("cluster directory");
            cluster.ensure_running().expect("the test cluster starts");
            cluster.stop_when_process_exits(std::process::id(), true).expect("watchdog");
            cluster
        })
    })
    .await
    .unwrap();
    let db = format!("m_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&cluster.connect_options("postgres")).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    PgPool::connect_with(cluster.connect_options(&db)).await.unwrap()
}

#[tokio::test]
async fn each_function_has_one_live_definition_the_latest_whole_one_in_the_migrations() {
    let pool = fresh_database().await;
    rewardlab::db::migrate(&pool).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.proname::text, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut in_database: BTreeMap<String, String> = BTreeMap::new();
    for (name, source) in rows {
        assert!(
            in_database.insert(name.clone(), source).is_none(),
            "{name} has two live definitions (overloads): a migration that changes a function's arguments must \
             DROP FUNCTION the old signature first"
        );
    }
    let in_migrations = live_functions_in_migrations();
    assert_eq!(
        in_database.keys().collect::<Vec<_>>(),
        in_migrations.keys().collect::<Vec<_>>(),
        "the functions in the database are not those the migrations' CREATE / DROP FUNCTION statements leave"
    );
    for (name, (file, body)) in &in_migrations {
        assert!(
            in_database[name] == *body,
            "{name}'s live source is not its latest definition (in migrations/{file}): functions change only by a \
             whole CREATE OR REPLACE FUNCTION"
        );
    }
}

#[tokio::test]
async fn a_database_whose_migrations_differ_from_this_build_is_refused_with_the_reason() {
    let pool = fresh_database().await;
    rewardlab::db::migrate(&pool).await.unwrap();
    // Migrating again is a no-op.
    rewardlab::db::migrate(&pool).await.unwrap();

    // A data directory from before the baseline: its 0001 was another file, and 0002-0008 ran.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1").execute(&pool).await.unwrap();
    let err = rewardlab::db::migrate(&pool).await.unwrap_err().to_string();
    assert!(err.contains("migration 1 differs") && err.contains("cannot be upgraded"), "{err}");

    let pool = fresh_database().await;
    rewardlab::db::migrate(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (999999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = rewardlab::db::migrate(&pool).await.unwrap_err().to_string();
    assert!(err.contains("migration 999999 is not in this build"), "{err}");
}

#[test]
fn function_statements_are_read_from_line_starts_with_their_bodies() {
    let sql = "-- CREATE FUNCTION not_this() in a comment\n\
               CREATE OR REPLACE FUNCTION public.f(a int) RETURNS int LANGUAGE sql AS $body$\n    SELECT a $$ $body$;\n\
               create function g() returns void language plpgsql as $$ BEGIN END $$;\n\
               DROP FUNCTION IF EXISTS f(int), public.h(uuid, text) CASCADE;\n";
    let statements = function_statements("t.sql", sql);
    let described: Vec<String> = statements
        .iter()
        .map(|s| match s {
            FunctionStatement::Create { name, body } => format!("create {name} [{body}]"),
            FunctionStatement::Drop(names) => format!("drop {}", names.join(",")),
        })
        .collect();
    assert_eq!(described, ["create f [\n    SELECT a $$ ]", "create g [ BEGIN END ]", "drop f,h"]);
}
