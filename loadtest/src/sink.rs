//! quiver-event-sink: a CloudEvents receiver for the payload log
//! benchmarks, cheap enough to share a core with the load generator. It
//! answers every POST (200, or the `--status` given) after reading the body,
//! counts events (one per binary-mode POST; in batch mode the events'
//! `specversion` attributes, found without parsing the batch: parsing it
//! took CPU from the load generator on the same core), and prints
//! `posts=N events=M` when it gets SIGTERM or Ctrl-C.
//! `--hang` reads requests and never answers (a sink that is down without
//! refusing connections).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser, Debug)]
#[command(name = "quiver-event-sink", about)]
struct Args {
    /// Where to listen; port 0 picks one (printed as `listening on ...`).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The status every POST gets.
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Never answer.
    #[arg(long)]
    hang: bool,
}

#[derive(Default)]
struct Counts {
    posts: AtomicU64,
    events: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let counts = Arc::new(Counts::default());
    let status = StatusCode::from_u16(args.status)?;
    let hang = args.hang;
    let accept = {
        let counts = Arc::clone(&counts);
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counts = Arc::clone(&counts);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let counts = Arc::clone(&counts);
                        async move {
                            let batch = req
                                .headers()
                                .get("content-type")
                                .is_some_and(|v| v.as_bytes().starts_with(b"application/cloudevents-batch+json"));
                            let body = req.into_body().collect().await?.to_bytes();
                            if hang {
                                std::future::pending::<()>().await;
                            }
                            let events = match batch {
                                // Every structured event has one, and a V2 body's JSON
                                // (numbers, names, escaped strings) none.
                                true => memchr::memmem::find_iter(&body, br#""specversion":"#).count(),
                                false => 1,
                            };
                            counts.posts.fetch_add(1, Relaxed);
                            counts.events.fetch_add(events as u64, Relaxed);
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = status;
                            Ok::<_, hyper::Error>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = accept => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!(
        "posts={} events={}",
        counts.posts.load(Relaxed),
        counts.events.load(Relaxed)
    );
    Ok(())
}
