//! A real HTTP/1.1 server (hyper) on 127.0.0.1 for download tests, with
//! faults on demand: an error status, a body cut short, a body that stalls,
//! a server that ignores `Range`. Every request is logged.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers one request for a path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status, empty body.
    Status(u16),
    /// The right headers, then only this many body bytes, then the
    /// connection is dropped.
    Truncate(usize),
    /// The right headers, this many bytes, then nothing for this long.
    Stall(usize, Duration),
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, Vec<u8>>,
    faults: BTreeMap<String, VecDeque<Fault>>,
    always: BTreeMap<String, Fault>,
    no_range: bool,
    log: Vec<(String, Option<String>)>,
}

/// The server; it stops with the test process.
pub struct Server {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl Server {
    pub fn start() -> Server {
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(l.local_addr().expect("addr")).expect("send");
                loop {
                    let Ok((conn, _)) = l.accept().await else {
                        continue;
                    };
                    let st = Arc::clone(&st);
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let st = Arc::clone(&st);
                            async move { Ok::<_, std::convert::Infallible>(answer(&st, req)) }
                        });
                        let io = hyper_util::rt::TokioIo::new(conn);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    });
                }
            });
        });
        let addr = rx.recv().expect("server address");
        Server { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn put(&self, path: &str, data: Vec<u8>) {
        self.lock().files.insert(path.into(), data);
    }

    /// Faults for the next requests of `path`, in order.
    pub fn faults(&self, path: &str, faults: Vec<Fault>) {
        self.lock().faults.insert(path.into(), faults.into());
    }

    /// A fault for every request of `path`.
    pub fn always(&self, path: &str, fault: Fault) {
        self.lock().always.insert(path.into(), fault);
    }

    pub fn clear(&self, path: &str) {
        let mut s = self.lock();
        s.always.remove(path);
        s.faults.remove(path);
    }

    pub fn ignore_range(&self, yes: bool) {
        self.lock().no_range = yes;
    }

    /// (path, Range header) of every request so far.
    pub fn log(&self) -> Vec<(String, Option<String>)> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn answer(state: &Mutex<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.log.push((path.clone(), range.clone()));
    let fault = s
        .faults
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .or_else(|| s.always.get(&path).cloned());
    let Some(data) = s.files.get(&path).cloned() else {
        return status(404);
    };
    let start = match (&range, s.no_range) {
        (Some(r), false) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok()),
        _ => None,
    };
    drop(s);
    if let Some(Fault::Status(code)) = fault {
        return status(code);
    }
    let (code, body) = match start {
        Some(n) if n < data.len() => (206, data[n..].to_vec()),
        Some(_) => return status(416),
        None => (200, data.clone()),
    };
    let mut resp = Response::builder()
        .status(code)
        .header("content-length", body.len())
        .header("accept-ranges", "bytes");
    if let Some(n) = start.filter(|_| code == 206) {
        resp = resp.header(
            "content-range",
            format!("bytes {n}-{}/{}", data.len() - 1, data.len()),
        );
    }
    resp.body(faulty_body(body, fault)).expect("response")
}

fn status(code: u16) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
        .expect("response")
}

fn faulty_body(body: Vec<u8>, fault: Option<Fault>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        let (cut, pause, fail) = match fault {
            Some(Fault::Truncate(n)) => (n.min(body.len()), None, true),
            Some(Fault::Stall(n, d)) => (n.min(body.len()), Some(d), false),
            _ => (body.len(), None, false),
        };
        let _ = tx
            .send(Ok(Frame::data(Bytes::copy_from_slice(&body[..cut]))))
            .await;
        // Let the bytes reach the socket before the connection is dropped.
        tokio::time::sleep(pause.unwrap_or(Duration::from_millis(100))).await;
        if fail || pause.is_some() {
            let _ = tx.send(Err(std::io::Error::other("cut short"))).await;
        }
    });
    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
}
