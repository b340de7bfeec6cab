//! The agent's own HTTP listeners (`/metrics` with `/status` and
//! `/health`, and the query exporter): started from the configuration and
//! stopped again on a reload.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::status::StatusBoard;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stop waits for scrapes in flight before cutting them off.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct HttpServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds now (so a port in use is an error here, not later) and serves
    /// `app` in the background.
    pub async fn start(bind: SocketAddr, app: axum::Router) -> std::io::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        // On an accept error other than a dropped connection (EMFILE when
        // descriptors run out) axum 0.8's serve loop sleeps a second and
        // accepts again: the listener neither spins nor stops. The sources'
        // max_open_files keep the agent from getting there.
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(HttpServer { stop, task })
    }

    /// Stops accepting, lets requests in flight finish (up to STOP_GRACE)
    /// and releases the port.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A router answering `GET /metrics` with what `render` produces, in the
/// Prometheus text format.
pub fn metrics_router<F, Fut>(render: F) -> axum::Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let page = render();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    page.await,
                )
            }
        }),
    )
}

/// `GET /health` (200 `ok` while the process serves at all: liveness) and
/// `GET /status` (the running pipeline's state as JSON, see `status`).
/// `/status` answers 200 whatever its `ok` says: a failing collector is a
/// state to report, not an error of the page.
pub fn status_router(board: Arc<StatusBoard>) -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { ([(CONTENT_TYPE, "text/plain")], "ok\n") }),
        )
        .route(
            "/status",
            axum::routing::get(move || {
                let mut page =
                    serde_json::to_string_pretty(&board.render()).expect("a JSON value serializes");
                page.push('\n');
                async move { ([(CONTENT_TYPE, "application/json")], page) }
            }),
        )
}
