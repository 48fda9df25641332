//! The TCP side: an accept loop serving HTTP/1.1 connections that can be stopped
//! (the port refuses connections and every open connection is cut) and started
//! again on the same address, to play "API server down".

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    router: Router,
    running: Mutex<Option<Running>>,
    /// Bumped to cut every open connection.
    kill: Arc<watch::Sender<u64>>,
}

pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Coming back on the same port right after going down needs this.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Listener {
    /// Starts serving `router` on `tcp` (from [`bind`]).
    pub fn start(tcp: TcpListener, router: Router) -> io::Result<Arc<Self>> {
        let addr = tcp.local_addr()?;
        let (kill, _) = watch::channel(0);
        let l = Arc::new(Listener {
            addr,
            router,
            running: Mutex::new(None),
            kill: Arc::new(kill),
        });
        l.spawn(tcp);
        Ok(l)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn spawn(&self, tcp: TcpListener) {
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            tcp,
            self.router.clone(),
            stop_rx,
            self.kill.clone(),
        ));
        let old = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Running { stop, task });
        if let Some(old) = old {
            let _ = old.stop.send(());
        }
    }

    /// Closes the port and cuts every open connection; waits until the port is closed.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.kill.send_modify(|n| *n += 1);
        if let Some(r) = running {
            let _ = r.stop.send(());
            let _ = r.task.await;
        }
    }

    /// Listens again on the same address (no-op when already listening).
    pub fn resume(&self) -> io::Result<()> {
        if self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            return Ok(());
        }
        let tcp = bind(self.addr)?;
        self.spawn(tcp);
        Ok(())
    }

    /// Stops without waiting (for Drop).
    pub fn stop_now(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.kill.send_modify(|n| *n += 1);
        if let Some(r) = running {
            let _ = r.stop.send(());
            r.task.abort();
        }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    router: Router,
    mut stop: oneshot::Receiver<()>,
    kill: Arc<watch::Sender<u64>>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = tcp.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let mut killed = kill.subscribe();
                    let svc = TowerToHyperService::new(router.clone());
                    tokio::spawn(async move {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::select! {
                            res = conn => {
                                if let Err(e) = res {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                            }
                            _ = killed.changed() => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}
