//! The Pub/Sub emulator that ships with the Cloud CLI (what `gcloud beta
//! emulators pubsub start` runs), started on a free port of 127.0.0.1.
//!
//! The emulator's own launcher is run directly rather than through gcloud:
//! it `exec`s Java, so the child is the emulator itself and dropping it
//! stops exactly that process (gcloud would leave Java behind it).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::Tool;

/// How long the emulator (Java) may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug)]
pub struct PubSubEmulator {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl PubSubEmulator {
    /// Starts the emulator. Any failure (not installed, would not start,
    /// exited, never listened) is an `Err` that the test fails on; the
    /// message names the tool and how to install it.
    pub async fn start() -> Result<PubSubEmulator, String> {
        crate::tools::check(Tool::PubSubEmulator)
            .map_err(|why| crate::tools::missing_message(Tool::PubSubEmulator, &why))?;
        let launcher = crate::tools::pubsub_launcher()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("meshmirror-pubsub-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("emulator.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&launcher)
            .arg("--host=127.0.0.1")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{} would not start: {e}", launcher.display()))?;
        let mut emulator = PubSubEmulator { child, port, dir };
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                tracing::info!(port, elapsed = ?started.elapsed(), "Pub/Sub emulator listening");
                return Ok(emulator);
            }
            if let Ok(Some(status)) = emulator.child.try_wait() {
                return Err(format!(
                    "the Pub/Sub emulator exited ({status}); log:\n{}",
                    emulator.log()
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "the Pub/Sub emulator did not listen within {START_TIMEOUT:?}; log:\n{}",
                    emulator.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("emulator.log")).unwrap_or_default()
    }

    /// Creates `projects/P/topics/T` (the emulator's REST API).
    pub async fn create_topic(&self, topic: &str) -> Result<(), String> {
        self.rest("PUT", topic, "{}").await
    }

    /// Creates `projects/P/subscriptions/S` on a topic.
    pub async fn create_subscription(
        &self,
        subscription: &str,
        topic: &str,
        ack_deadline_seconds: u32,
    ) -> Result<(), String> {
        let body = serde_json::json!({"topic": topic, "ackDeadlineSeconds": ack_deadline_seconds});
        self.rest("PUT", subscription, &body.to_string()).await
    }

    /// Publishes one message with `data` to a topic.
    pub async fn publish(&self, topic: &str, data: &str) -> Result<(), String> {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(data);
        let body = serde_json::json!({"messages": [{"data": data}]});
        self.rest("POST", &format!("{topic}:publish"), &body.to_string())
            .await
    }

    /// Pulls up to `max` messages from a subscription without waiting for
    /// any (`returnImmediately`), and returns their data. The messages are
    /// not acknowledged: a message the subscriber neither acknowledged nor
    /// holds under its ack deadline is delivered here.
    pub async fn pull(&self, subscription: &str, max: u32) -> Result<Vec<String>, String> {
        use base64::Engine;
        let body = serde_json::json!({"maxMessages": max, "returnImmediately": true});
        let answer = self
            .request("POST", &format!("{subscription}:pull"), &body.to_string())
            .await?;
        let answer: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|e| format!("pull {subscription}: {e}: {answer}"))?;
        let received = answer["receivedMessages"].as_array().cloned();
        received
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let data = m["message"]["data"].as_str().unwrap_or_default();
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map(|d| String::from_utf8_lossy(&d).into_owned())
                    .map_err(|e| format!("pull {subscription}: data: {e}"))
            })
            .collect()
    }

    async fn rest(&self, method: &str, resource: &str, body: &str) -> Result<(), String> {
        self.request(method, resource, body).await.map(|_| ())
    }

    /// One HTTP/1.1 request with a JSON body; the answer's body on a 2xx
    /// answer. (The emulator keeps the connection open whatever the request
    /// says, so the answer is read by its Content-Length.)
    async fn request(&self, method: &str, resource: &str, body: &str) -> Result<String, String> {
        let call = async {
            use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| e.to_string())?;
            let request = format!(
                "{method} /v1/{resource} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                self.port,
                body.len()
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut reader = BufReader::new(stream);
            let mut status_line = String::new();
            reader
                .read_line(&mut status_line)
                .await
                .map_err(|e| e.to_string())?;
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut answer = vec![0; length];
            reader
                .read_exact(&mut answer)
                .await
                .map_err(|e| e.to_string())?;
            let status = status_line.split_whitespace().nth(1).unwrap_or_default();
            if status.starts_with('2') {
                Ok(String::from_utf8_lossy(&answer).into_owned())
            } else {
                Err(format!(
                    "{method} {resource}: {status_line} {}",
                    String::from_utf8_lossy(&answer)
                ))
            }
        };
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .map_err(|_| format!("{method} {resource}: no answer within 20 s"))?
    }
}

impl Drop for PubSubEmulator {
    fn drop(&mut self) {
        // The emulator's own process, by its id: nothing else is signalled.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
