//! The identity store end to end, on both databases: every scenario is an async fn taking a
//! database URL, and [`on_both!`] runs each twice, as `<scenario>::sqlite` (a fresh file in a
//! temp dir) and `<scenario>::postgres` (a fresh database of a real PostgreSQL server of the
//! test's own: `xi_testkit::postgres::TempPostgres`, stopped and deleted when the test ends).
//! Nothing is mocked; time is a `ManualClock`. One server per test rather than one shared
//! through a `static` (testkit's advice: statics are never dropped, so a shared server's temp
//! dir would be left behind); a start costs about a second.

/// For each scenario `name(url: String)` of the calling module: `name::sqlite` and
/// `name::postgres`, two tests.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (_dir, url) = crate::support::sqlite();
                super::$scenario(url).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let pg = crate::support::postgres().await;
                super::$scenario(pg.fresh_database()).await;
            }
        }
    )*};
}

mod audit;
mod bootstrap;
mod cache;
mod concurrency;
mod keys;
mod migrations;
mod sessions;
mod support;
mod users;
