//! The messages' templates: a subject, a plain-text body and an HTML body per
//! message, kept in `templates/email/<message>/` and compiled into the binary,
//! rendered with minijinja (HTML auto-escaped, strict about unknown variables).

use minijinja::{Environment, UndefinedBehavior, Value};

/// Every template, by name (`<message>/<part>`), as the repository has it.
const SOURCES: &[(&str, &str)] = &[
    (
        "password_reset/subject.txt",
        include_str!("../../templates/email/password_reset/subject.txt"),
    ),
    (
        "password_reset/body.txt",
        include_str!("../../templates/email/password_reset/body.txt"),
    ),
    (
        "password_reset/body.html",
        include_str!("../../templates/email/password_reset/body.html"),
    ),
    (
        "password_changed/subject.txt",
        include_str!("../../templates/email/password_changed/subject.txt"),
    ),
    (
        "password_changed/body.txt",
        include_str!("../../templates/email/password_changed/body.txt"),
    ),
    (
        "password_changed/body.html",
        include_str!("../../templates/email/password_changed/body.html"),
    ),
    (
        "verify_email/subject.txt",
        include_str!("../../templates/email/verify_email/subject.txt"),
    ),
    (
        "verify_email/body.txt",
        include_str!("../../templates/email/verify_email/body.txt"),
    ),
    (
        "verify_email/body.html",
        include_str!("../../templates/email/verify_email/body.html"),
    ),
    (
        "email_changed/subject.txt",
        include_str!("../../templates/email/email_changed/subject.txt"),
    ),
    (
        "email_changed/body.txt",
        include_str!("../../templates/email/email_changed/body.txt"),
    ),
    (
        "email_changed/body.html",
        include_str!("../../templates/email/email_changed/body.html"),
    ),
];

/// One message, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line (one line).
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// The compiled-in templates.
pub struct Templates {
    environment: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut environment = Environment::new();
        // A variable the code forgot is an error, not an empty string in a mail.
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        environment.set_loader(|name| {
            Ok(SOURCES
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, source)| (*source).to_owned()))
        });
        Self { environment }
    }
}

impl Templates {
    /// Renders `message`'s three parts with `context` (auto-escaped in HTML,
    /// by the `.html` name).
    pub fn render(&self, message: &str, context: &Value) -> Result<Rendered, minijinja::Error> {
        let part = |name: &str| {
            self.environment
                .get_template(&format!("{message}/{name}"))?
                .render(context)
        };
        Ok(Rendered {
            subject: part("subject.txt")?.trim().replace(['\r', '\n'], " "),
            text: part("body.txt")?,
            html: part("body.html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::*;

    #[test]
    fn every_message_renders_with_its_variables() {
        let templates = Templates::default();
        let reset = templates
            .render(
                "password_reset",
                &context! {
                    product_name => "Acme",
                    to => "ada@example.com",
                    link => "https://app.example.com/reset-password?token=abc&x=<1>",
                    expires_in => "60 minutes",
                },
            )
            .expect("password_reset renders");
        assert_eq!(reset.subject, "Reset your Acme password");
        assert!(
            reset
                .text
                .contains("https://app.example.com/reset-password?token=abc&x=<1>")
        );
        assert!(reset.text.contains("within 60 minutes"));
        // HTML is escaped: the link cannot break out of its attribute.
        assert!(
            reset.html.contains("token=abc&amp;x=&lt;1&gt;"),
            "{}",
            reset.html
        );
        let changed = templates
            .render(
                "password_changed",
                &context! { product_name => "Acme", to => "ada@example.com" },
            )
            .expect("password_changed renders");
        assert_eq!(changed.subject, "Your Acme password was changed");
        let verify = templates
            .render(
                "verify_email",
                &context! {
                    product_name => "Acme", to => "ada@example.com",
                    link => "https://app.example.com/verify-email?token=abc",
                    expires_in => "48 hours",
                },
            )
            .expect("verify_email renders");
        assert_eq!(verify.subject, "Confirm your Acme email address");
        assert!(verify.text.contains("within 48 hours"));
        let moved = templates
            .render(
                "email_changed",
                &context! { product_name => "Acme", to => "ada@example.com", new_address => "ada@new.example" },
            )
            .expect("email_changed renders");
        assert!(moved.text.contains("ada@new.example"));
    }

    #[test]
    fn a_missing_variable_or_template_is_an_error() {
        let templates = Templates::default();
        assert!(
            templates
                .render("password_reset", &context! { product_name => "Acme" })
                .is_err()
        );
        assert!(templates.render("no_such_message", &context! {}).is_err());
    }
}
