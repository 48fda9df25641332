//! Starts Azurite's queue service (the Azure Storage emulator, `npm install
//! azurite`) on 127.0.0.1 over HTTPS with a certificate of the test CA and
//! `--oauth basic`, so clients use bearer tokens from the ARM mock's token
//! endpoint exactly as they would against Azure.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TestCa;
use crate::tools::Tool;

/// The emulator's one account.
pub const ACCOUNT: &str = "devstoreaccount1";

/// A running `azurite-queue`; killed when dropped.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Azurite {
    /// Starts the queue service. A missing `azurite-queue` is an error that
    /// names the install: tests fail, not skip.
    pub async fn start(ca: &TestCa) -> io::Result<Azurite> {
        crate::tools::check(Tool::Azurite).map_err(|why| {
            io::Error::new(
                io::ErrorKind::NotFound,
                crate::tools::missing_message(Tool::Azurite, &why),
            )
        })?;
        let dir = std::env::temp_dir().join(format!(
            "meshmirror-azurite-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir)?;
        let cert = ca.issue(&["127.0.0.1", "localhost"])?;
        std::fs::write(dir.join("cert.pem"), &cert.cert_pem)?;
        std::fs::write(dir.join("key.pem"), &cert.key_pem)?;
        // A free port: bound, read, released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("azurite-queue")
            .arg("--queueHost")
            .arg("127.0.0.1")
            .arg("--queuePort")
            .arg(port.to_string())
            .arg("--location")
            .arg(&dir)
            .arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .arg("--oauth")
            .arg("basic")
            .arg("--skipApiVersionCheck")
            .arg("--silent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let azurite = Azurite { child, dir, port };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(io::Error::other("azurite-queue did not start in 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(azurite)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT/devstoreaccount1/QUEUE` (path-style, as
    /// Azurite serves an IP host).
    pub fn queue_url(&self, queue: &str) -> String {
        format!("https://127.0.0.1:{}/{ACCOUNT}/{queue}", self.port)
    }
}
