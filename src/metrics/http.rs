//! The daemon's metrics endpoint: plain HTTP/1.1 (hyper) on `[metrics] listen`. `GET
//! /metrics` is the exposition; anything else is a 404 with an empty body, so the endpoint
//! tells nothing to whatever else knocks.
//!
//! An address that cannot be bound is one line in the log and no endpoint: metrics are for
//! watching replication, and must never be the reason it does not run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

use super::MetricsError;
use super::collect::snapshot;
use super::registry::{self, Live};
use crate::home::Home;
use crate::names::AccountName;
use crate::replicate::scheduler::Scheduler;
use crate::ssh::Pool;

/// A client that has not sent its request's headers by then is dropped, so idle
/// connections cannot pile up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a scrape reads: the server's durable state and the daemon's live series.
struct Scraper {
    home: Home,
    this: AccountName,
    live: Arc<Live>,
}

impl Scraper {
    async fn scrape(&self) -> Result<String, MetricsError> {
        let (home, this, live) = (self.home.clone(), self.this.clone(), self.live.clone());
        // One small file per repo with queued work: disk reads, off the async workers.
        tokio::task::spawn_blocking(move || registry::render(&snapshot(&home, &this), Some(&live)))
            .await?
    }
}

/// Serves metrics at `addr` for the daemon of `home` (named `this`), counting the pushes of
/// `scheduler` and reporting the connections of `pool`, until the runtime stops. Returns
/// the address bound (the port, when `addr` asked for any), or `None` when it cannot be
/// bound: then it has logged one line, and the daemon goes on without metrics.
pub(crate) async fn start(
    addr: SocketAddr,
    home: &Home,
    this: &AccountName,
    pool: Arc<Pool>,
    scheduler: &Scheduler,
) -> Option<SocketAddr> {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(listen = %addr, error = %e, "cannot serve metrics; replicating without them");
            return None;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let live = Live::new(pool);
    scheduler.observe(live.clone());
    let scraper = Arc::new(Scraper {
        home: home.clone(),
        this: this.clone(),
        live,
    });
    info!(listen = %bound, "serving metrics at /metrics");
    tokio::spawn(serve(listener, scraper));
    Some(bound)
}

async fn serve(listener: TcpListener, scraper: Arc<Scraper>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: pause rather than spin.
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scraper = scraper.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let scraper = scraper.clone();
                async move { Ok::<_, Infallible>(answer(&req, &scraper).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "metrics: connection ended badly");
            }
        });
    }
}

/// The answer to one request.
async fn answer(req: &Request<Incoming>, scraper: &Scraper) -> Response<Full<Bytes>> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return status(StatusCode::NOT_FOUND);
    }
    match scraper.scrape().await {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            if let Ok(value) = registry::CONTENT_TYPE.parse() {
                response.headers_mut().insert(CONTENT_TYPE, value);
            }
            response
        }
        Err(e) => {
            error!(error = %e, "metrics: scrape failed");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// An empty response with `code`.
fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
