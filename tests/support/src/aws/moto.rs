//! moto's server for tests: started from PATH on a free 127.0.0.1 port (or
//! the one named by `MOTO_ENDPOINT`), reset on start, stopped on drop.

use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::upstream;
use crate::tools::Tool;

/// How long moto may take to answer after it was started.
const STARTUP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    /// `moto_server` is missing or does not run (the message says how to
    /// install it).
    #[error("{0}")]
    NotInstalled(String),
    #[error("moto_server exited at start-up ({0})")]
    Exited(String),
    #[error("moto_server did not answer on {0} within {STARTUP:?}")]
    NoAnswer(String),
    #[error("moto at {endpoint}: {error}")]
    Io { endpoint: String, error: io::Error },
    #[error("moto at {endpoint} answered {status} to {what}")]
    Status {
        endpoint: String,
        what: &'static str,
        status: u16,
    },
}

/// A running moto server.
pub struct Moto {
    authority: String,
    child: Option<Child>,
    /// Tests sharing one `MOTO_ENDPOINT` take turns (each resets it).
    _turn: Option<OwnedMutexGuard<()>>,
}

fn shared_turns() -> Arc<Mutex<()>> {
    static TURNS: std::sync::OnceLock<Arc<Mutex<()>>> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| Arc::new(Mutex::new(()))).clone()
}

impl Moto {
    /// A fresh moto (or the shared one `MOTO_ENDPOINT` names). A missing
    /// `moto_server` is an error naming the install: tests fail, not skip.
    pub async fn start() -> Result<Moto, MotoError> {
        if let Ok(endpoint) = std::env::var("MOTO_ENDPOINT") {
            let authority = endpoint
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            let turn = shared_turns().lock_owned().await;
            let moto = Moto {
                authority,
                child: None,
                _turn: Some(turn),
            };
            moto.reset().await?;
            return Ok(moto);
        }
        crate::tools::check(Tool::Moto).map_err(|why| {
            MotoError::NotInstalled(crate::tools::missing_message(Tool::Moto, &why))
        })?;
        let port = free_port().map_err(|error| MotoError::Io {
            endpoint: "127.0.0.1:0".into(),
            error,
        })?;
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                return Err(MotoError::Io {
                    endpoint: format!("127.0.0.1:{port}"),
                    error,
                });
            }
        };
        let mut moto = Moto {
            authority: format!("127.0.0.1:{port}"),
            child: Some(child),
            _turn: None,
        };
        moto.wait_ready().await?;
        Ok(moto)
    }

    async fn wait_ready(&mut self) -> Result<(), MotoError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(MotoError::Exited(status.to_string()));
            }
            if let Ok(r) =
                upstream::send(&self.authority, "GET", "/moto-api/data.json", &[], b"").await
                && r.status == 200
            {
                return Ok(());
            }
            if started.elapsed() > STARTUP {
                return Err(MotoError::NoAnswer(self.authority.clone()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// `127.0.0.1:PORT`
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub async fn reset(&self) -> Result<(), MotoError> {
        let r = upstream::send(&self.authority, "POST", "/moto-api/reset", &[], b"")
            .await
            .map_err(|error| MotoError::Io {
                endpoint: self.endpoint(),
                error,
            })?;
        if r.status != 200 {
            return Err(MotoError::Status {
                endpoint: self.endpoint(),
                what: "reset",
                status: r.status,
            });
        }
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
