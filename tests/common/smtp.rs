//! A real SMTP server for the email tests: aiosmtpd (pinned, from PyPI, in a
//! virtualenv under `~/.cache/tessera/tools`) running `smtp_sink.py`, which
//! writes every accepted message as JSON and refuses recipients whose address
//! contains "refuse" with a 550.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::repo_root;
use super::tools::ensure_aiosmtpd;

/// One message the server accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    /// The envelope's recipients.
    pub rcpt_tos: Vec<String>,
    /// The `From` header.
    pub from: String,
    /// The `To` header.
    pub to: String,
    /// The `Subject` header.
    pub subject: String,
    /// The `Message-ID` header.
    pub message_id: String,
    /// The decoded plain-text body.
    pub text: Option<String>,
    /// The decoded HTML body.
    pub html: Option<String>,
}

impl Received {
    /// The first link in the plain-text body that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> String {
        let text = self.text.as_deref().unwrap_or_default();
        text.split_whitespace()
            .find(|word| word.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}… link in {text}"))
            .to_owned()
    }
}

/// A running SMTP server; stopped when dropped.
pub struct SmtpServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    out_dir: PathBuf,
    process: Child,
    /// Held open: the script runs until its stdin closes, so it dies with us.
    _stdin: ChildStdin,
}

impl SmtpServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port`, keeping its messages in a fresh directory.
    pub fn start_on(port: u16) -> Self {
        let python = ensure_aiosmtpd();
        let out_dir = repo_root()
            .join(".data/test-smtp")
            .join(format!("{port}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&out_dir)
            .unwrap_or_else(|error| panic!("{} cannot be created: {error}", out_dir.display()));
        let mut process = Command::new(python)
            .arg(repo_root().join("tests/common/smtp_sink.py"))
            .arg(port.to_string())
            .arg(&out_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("the SMTP server cannot start: {error}"));
        let stdin = process.stdin.take().expect("the server's stdin is piped");
        let stdout = process.stdout.take().expect("the server's stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the SMTP server says whether it started");
        assert_eq!(
            line.trim(),
            "READY",
            "the SMTP server did not start: {line:?}"
        );
        Self {
            port,
            out_dir,
            process,
            _stdin: stdin,
        }
    }

    /// `SMTP_URL` for this server (plain SMTP on localhost, no TLS).
    pub fn url(&self) -> String {
        smtp_url(self.port)
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.out_dir)
            .expect("the message directory can be read")
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let json = std::fs::read_to_string(path).expect("a message file can be read");
                serde_json::from_str(&json).expect("a message file is the sink's JSON")
            })
            .collect()
    }

    /// Waits until `count` messages have arrived (panics after `patience`);
    /// returns them all.
    pub async fn wait_for(&self, count: usize, patience: Duration) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                started.elapsed() < patience,
                "{} of {count} messages after {patience:?}: {messages:?}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.out_dir);
    }
}

/// `SMTP_URL` for a plain SMTP server on localhost at `port`.
pub fn smtp_url(port: u16) -> String {
    format!("smtp://127.0.0.1:{port}")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}
