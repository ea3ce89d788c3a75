//! Handing a message to the mail server: SMTP through lettre (TLS, AUTH and
//! timeouts as `SMTP_URL` says), or, in development without a server, the
//! log. The server's answer decides what happens next: a 5xx is a permanent
//! refusal, anything else that fails (a 4xx, a refused connection, a timeout)
//! may succeed later.

use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::email::config::EmailConfig;

/// Where messages go.
pub enum Transport {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// The log, one line per message (development without `SMTP_URL`).
    Log,
}

/// The server's answer to a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The reply code (`250`); `None` for the log.
    pub code: Option<u16>,
    /// The reply text (`OK: queued as …`); `None` for the log.
    pub answer: Option<String>,
}

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The server refused it for good (a 5xx reply): another attempt would be refused too.
    #[error("the mail server refused the message: {0}")]
    Refused(String),
    /// It may go through later (a 4xx reply, no connection, a timeout).
    #[error("the message could not be delivered yet: {0}")]
    Unavailable(String),
}

impl Transport {
    /// The transport the settings describe: SMTP when `SMTP_URL` is set, the log otherwise.
    pub fn from_config(config: &EmailConfig) -> Result<Self, SmtpError> {
        let Some(url) = &config.smtp_url else {
            return Ok(Self::Log);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())?
            .timeout(Some(config.smtp_timeout))
            .build();
        Ok(Self::Smtp(transport))
    }

    /// Delivers `message`; `log_line` is what the log transport writes (the
    /// link the message carries, so the flow works without a mail server).
    pub async fn send(&self, message: Message, log_line: &str) -> Result<Accepted, DeliveryError> {
        match self {
            Self::Log => {
                let to = message
                    .envelope()
                    .to()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::info!(%to, "email delivered to the log (no SMTP_URL): {log_line}");
                Ok(Accepted {
                    code: None,
                    answer: None,
                })
            }
            Self::Smtp(transport) => match transport.send(message).await {
                Ok(response) => Ok(Accepted {
                    code: Some(u16::from(response.code())),
                    answer: Some(response.message().collect::<Vec<_>>().join(" ")),
                }),
                Err(error) if error.is_permanent() => {
                    Err(DeliveryError::Refused(error.to_string()))
                }
                Err(error) => Err(DeliveryError::Unavailable(error.to_string())),
            },
        }
    }
}
