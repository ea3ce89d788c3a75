//! `send_email`: one message, rendered from its template and handed to the
//! mail server. An internal kind: the service enqueues it in the transaction
//! that causes the message; clients cannot submit it and only admins see it.
//! A refusal (5xx) fails it at once; anything else that fails is retried with
//! the queue's backoff. The result records the Message-ID and the server's answer.

use std::sync::Arc;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use minijinja::context;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::email::config::EmailConfig;
use crate::email::templates::{Rendered, Templates};
use crate::email::transport::{DeliveryError, Transport};
use crate::executions::context::{JobContext, JobError};
use crate::executions::kinds::ExecutionKind;
use crate::shared::error::FieldError;

/// The longest link a message may carry.
const MAX_LINK_LEN: usize = 2048;

/// The longest address (RFC 5321's path limit).
const MAX_ADDRESS_LEN: usize = 254;

/// Input of `send_email`: the recipient and the message, by template.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendEmailInput {
    /// The recipient's address.
    #[schema(max_length = 254, format = "email")]
    pub to: String,
    /// Which message, with what it needs.
    #[schema(inline)]
    pub message: EmailMessage,
}

/// A message, by its template, with what the template fills in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "template", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmailMessage {
    /// A link that sets a new password.
    PasswordReset {
        /// The link, with its single-use token.
        #[schema(max_length = 2048)]
        link: String,
        /// How long the link works.
        expires_in_minutes: u32,
    },
    /// A notice that the password was changed.
    PasswordChanged,
    /// A link that proves the recipient's address.
    VerifyEmail {
        /// The link, with its single-use token.
        #[schema(max_length = 2048)]
        link: String,
        /// How long the link works.
        expires_in_hours: u32,
    },
    /// A notice to the old address that the account's email changed.
    EmailChanged {
        /// The account's new address.
        #[schema(max_length = 254, format = "email")]
        new_address: String,
    },
}

impl EmailMessage {
    /// Its template's name (the folder under `templates/email/`).
    pub fn template(&self) -> &'static str {
        match self {
            Self::PasswordReset { .. } => "password_reset",
            Self::PasswordChanged => "password_changed",
            Self::VerifyEmail { .. } => "verify_email",
            Self::EmailChanged { .. } => "email_changed",
        }
    }

    /// The link it carries, if any.
    fn link(&self) -> Option<&str> {
        match self {
            Self::PasswordReset { link, .. } | Self::VerifyEmail { link, .. } => Some(link),
            Self::PasswordChanged | Self::EmailChanged { .. } => None,
        }
    }
}

/// Where a message went.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveredVia {
    /// An SMTP server accepted it.
    Smtp,
    /// It was written to the log (development without `SMTP_URL`).
    Log,
}

/// Output of `send_email`: what the mail server said.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SendEmailOutput {
    /// The message's `Message-ID` header (the same on every attempt).
    pub message_id: String,
    /// Where it went.
    #[schema(inline)]
    pub delivered_via: DeliveredVia,
    /// The server's reply code (`250`); `null` for the log.
    pub smtp_code: Option<u16>,
    /// The server's reply text; `null` for the log.
    pub smtp_answer: Option<String>,
}

/// Delivers messages.
pub struct SendEmail {
    config: Arc<EmailConfig>,
    templates: Arc<Templates>,
    transport: Arc<Transport>,
}

impl SendEmail {
    /// The kind with the settings' transport (startup: a bad `SMTP_URL` stops it).
    pub fn from_config(config: EmailConfig) -> Result<Self, lettre::transport::smtp::Error> {
        let transport = Transport::from_config(&config)?;
        Ok(Self::with_transport(config, transport))
    }

    /// The kind delivering through `transport`.
    pub fn with_transport(config: EmailConfig, transport: Transport) -> Self {
        Self {
            config: Arc::new(config),
            templates: Arc::new(Templates::default()),
            transport: Arc::new(transport),
        }
    }

    /// `message` rendered for `to`.
    fn render(&self, to: &str, message: &EmailMessage) -> Result<Rendered, minijinja::Error> {
        let product_name = &self.config.product_name;
        let context = match message {
            EmailMessage::PasswordReset {
                link,
                expires_in_minutes,
            } => context! {
                product_name, to, link,
                expires_in => minutes(*expires_in_minutes),
            },
            EmailMessage::PasswordChanged => context! { product_name, to },
            EmailMessage::VerifyEmail {
                link,
                expires_in_hours,
            } => context! {
                product_name, to, link,
                expires_in => hours(*expires_in_hours),
            },
            EmailMessage::EmailChanged { new_address } => {
                context! { product_name, to, new_address }
            }
        };
        self.templates.render(message.template(), &context)
    }

    /// The MIME message: plain text and HTML alternatives, with `message_id`.
    fn compose(
        &self,
        to: Mailbox,
        rendered: Rendered,
        message_id: &str,
    ) -> Result<Message, lettre::error::Error> {
        Message::builder()
            .from(self.config.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(message_id.to_owned()))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
    }
}

/// "60 minutes", "1 minute".
fn minutes(count: u32) -> String {
    if count == 1 {
        "1 minute".to_owned()
    } else {
        format!("{count} minutes")
    }
}

/// "48 hours", "1 hour".
fn hours(count: u32) -> String {
    if count == 1 {
        "1 hour".to_owned()
    } else {
        format!("{count} hours")
    }
}

/// The recipient as a mailbox, if the address is one.
fn mailbox(to: &str) -> Option<Mailbox> {
    (to.len() <= MAX_ADDRESS_LEN && !to.contains(['<', '>', '\r', '\n']))
        .then(|| to.parse().ok())
        .flatten()
}

impl ExecutionKind for SendEmail {
    const NAME: &'static str = "send_email";
    const QUEUE: &'static str = "email";
    type Input = SendEmailInput;
    type Output = SendEmailOutput;

    fn validate(&self, input: &SendEmailInput) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if mailbox(&input.to).is_none() {
            errors.push(FieldError::field("to").because("must be an email address"));
        }
        if let Some(link) = input.message.link()
            && (link.len() > MAX_LINK_LEN || !link.starts_with("http"))
        {
            errors.push(FieldError::new(
                vec!["message".into(), "link".into()],
                "must be an http(s) URL of at most 2048 bytes",
                "value_error",
            ));
        }
        if let EmailMessage::EmailChanged { new_address } = &input.message
            && mailbox(new_address).is_none()
        {
            errors.push(FieldError::new(
                vec!["message".into(), "new_address".into()],
                "must be an email address",
                "value_error",
            ));
        }
        errors
    }

    fn describe(&self, input: &SendEmailInput) -> String {
        format!("{} to {}", input.message.template(), input.to)
    }

    async fn run(
        &self,
        input: SendEmailInput,
        context: JobContext,
    ) -> Result<SendEmailOutput, JobError> {
        let template = input.message.template();
        let to = mailbox(&input.to)
            .ok_or_else(|| JobError::Permanent(format!("{:?} is not an address", input.to)))?;
        // A template that does not render will not render on a retry either.
        let rendered = self.render(&input.to, &input.message).map_err(|error| {
            tracing::error!(%error, template, "a message template does not render");
            JobError::Permanent("The message could not be rendered.".to_owned())
        })?;
        // The execution's id: every attempt sends the same Message-ID, so a
        // receiver can tell a retry of a message it already has.
        let message_id = format!(
            "<{}@{}>",
            context.execution_id(),
            self.config.from.email.domain()
        );
        let message = self.compose(to, rendered, &message_id).map_err(|error| {
            JobError::Permanent(format!("the message cannot be built: {error}"))
        })?;
        let log_line = input.message.link().unwrap_or(template);
        match self.transport.send(message, log_line).await {
            Ok(accepted) => {
                metrics::counter!("emails_sent_total", "template" => template).increment(1);
                Ok(SendEmailOutput {
                    message_id,
                    delivered_via: match *self.transport {
                        Transport::Smtp(_) => DeliveredVia::Smtp,
                        Transport::Log => DeliveredVia::Log,
                    },
                    smtp_code: accepted.code,
                    smtp_answer: accepted.answer,
                })
            }
            Err(error @ DeliveryError::Refused(_)) => {
                metrics::counter!("emails_failed_total", "template" => template, "reason" => "refused")
                    .increment(1);
                Err(JobError::Permanent(error.to_string()))
            }
            Err(error @ DeliveryError::Unavailable(_)) => {
                metrics::counter!("emails_failed_total", "template" => template, "reason" => "unavailable")
                    .increment(1);
                Err(JobError::Failed(error.to_string()))
            }
        }
    }
}
