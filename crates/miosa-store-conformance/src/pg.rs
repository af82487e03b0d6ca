//! Throwaway PostgreSQL databases for tests, on the server named by
//! `MIOSA_TEST_DATABASE_URL` (started by `scripts/pg-test-cluster`).

use miosa_core::id::new_body;
use sqlx::{Connection, PgConnection};

/// The environment variable holding the test server's URL.
pub const TEST_DATABASE_URL_ENV: &str = "MIOSA_TEST_DATABASE_URL";

/// A fresh, uniquely named database, dropped by [`PgTestDb::cleanup`] or,
/// best effort, when dropped (say, after a failed assertion).
#[derive(Debug)]
pub struct PgTestDb {
    /// URL of the new database, for `PostgresStore::connect`.
    pub url: String,
    /// Its name, `miosa_t_…`.
    pub name: String,
    server_url: String,
    dropped: bool,
}

impl PgTestDb {
    /// Creates the database. Panics when `MIOSA_TEST_DATABASE_URL` is unset
    /// or the server refuses: PostgreSQL tests are never skipped.
    pub async fn create() -> Self {
        let Some(server_url) = std::env::var(TEST_DATABASE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
        else {
            panic!(
                "{TEST_DATABASE_URL_ENV} is not set: run ./scripts/test, which starts a \
                 throwaway PostgreSQL cluster"
            );
        };
        let name = format!("miosa_t_{}", new_body());
        let created = async {
            let mut conn = PgConnection::connect(&server_url).await?;
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await?;
            conn.close().await
        };
        if let Err(e) = created.await {
            panic!("cannot create test database {name} on {server_url}: {e}");
        }
        Self {
            url: database_url(&server_url, &name),
            name,
            server_url,
            dropped: false,
        }
    }

    /// Drops the database, disconnecting anyone still on it.
    pub async fn cleanup(mut self) {
        self.dropped = true;
        if let Err(e) = drop_database(&self.server_url, &self.name).await {
            panic!("cannot drop test database {}: {e}", self.name);
        }
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop cannot await, and may run inside a runtime: use a thread of
        // its own with a runtime of its own.
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_database(&server_url, &name))
                .map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: cannot drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

async fn drop_database(server_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(server_url).await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// `server_url` with its database replaced by `name`, query kept.
fn database_url(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut url = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_only_the_database() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:55432/postgres",
                "postgres://postgres@127.0.0.1:55432/t",
            ),
            (
                "postgres://u:p@h:1/postgres?sslmode=disable",
                "postgres://u:p@h:1/t?sslmode=disable",
            ),
            ("postgres://h", "postgres://h/t"),
            ("postgres://h?x=/y", "postgres://h/t?x=/y"),
            (
                "postgres:///postgres?host=/run/pg",
                "postgres:///t?host=/run/pg",
            ),
        ];
        for (server, want) in cases {
            assert_eq!(database_url(server, "t"), want, "{server}");
        }
    }
}
