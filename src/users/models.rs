//! Rows of the `users` table and the value types a user is made of.
//!
//! Input is parsed into these types once, at the edge (`Email::parse`,
//! `FullName::parse`), so nothing deeper can hold an invalid value.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::{AsChangeset, Insertable, Queryable, Selectable};
use uuid::Uuid;

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::shared::schema::users;
use crate::shared::validation::{Invalid, label_schema, parse_label};

crate::text_enum! {
    /// What an account may do.
    pub enum Role {
        /// An ordinary account.
        User => "user",
        /// May manage every account.
        Admin => "admin",
    }
}

/// An account, as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(Pg))]
pub struct User {
    /// Its id (UUIDv7: ordered by creation).
    pub id: Uuid,
    /// The email as the user typed it; unique case-insensitively.
    pub email: String,
    /// The name shown to people.
    pub full_name: String,
    /// What the account may do.
    pub role: Role,
    /// Inactive accounts cannot sign in and their tokens stop working.
    pub is_active: bool,
    /// Bumped on every change; the ETag.
    pub revision: i64,
    /// Access tokens carry this; bumping it invalidates them all at once.
    pub token_version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When its address was proven (a mailed link used); `None`: not yet.
    pub email_verified_at: Option<DateTime<Utc>>,
    /// The address it is changing to, until a link mailed there is used.
    pub pending_email: Option<String>,
}

/// A new account row.
#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser {
    /// Its id.
    pub id: Uuid,
    /// Its email.
    pub email: String,
    /// Its name.
    pub full_name: String,
    /// Its role.
    pub role: Role,
}

/// The columns an update may change; `None` leaves a column alone.
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    /// New email.
    pub email: Option<String>,
    /// New name.
    pub full_name: Option<String>,
    /// New role (admins only).
    pub role: Option<Role>,
    /// New active flag (admins only).
    pub is_active: Option<bool>,
}

impl UserChanges {
    /// Whether the update demotes or deactivates an admin (last-admin rule).
    pub fn removes_admin_power(&self) -> bool {
        self.role == Some(Role::User) || self.is_active == Some(false)
    }
}

/// Longest email address, in characters (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Longest name, in characters.
pub const MAX_FULL_NAME_CHARS: usize = 100;

/// The documented form of an email beyond `format: email`: the domain (after
/// the last `@`) holds a dot and does not end with one, which rules out
/// intranet hosts like `user@localhost`.
const DOTTED_DOMAIN_PATTERN: &str = r"@[^@]*\.[^@]*[^.@]$";

/// A syntactically valid email address, exactly as the user typed it.
///
/// Surrounding whitespace is refused rather than trimmed: the document says
/// `format: email`, and the server accepts exactly the strings it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses an address per RFC 5322's addr-spec, up to 254 characters, whose
    /// domain holds a dot.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        if raw.chars().count() > MAX_EMAIL_CHARS {
            return Err(Invalid::new(format!(
                "must be at most {MAX_EMAIL_CHARS} characters"
            )));
        }
        let valid = email_address::EmailAddress::parse_with_options(
            raw,
            email_address::Options::default().without_display_text(),
        )
        .is_ok();
        let has_dotted_domain = raw
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain.contains('.') && !domain.ends_with('.'));
        if valid && has_dotted_domain {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new("is not a valid email address"))
        }
    }

    /// The address.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl PartialSchema for Email {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .max_length(Some(MAX_EMAIL_CHARS))
            .pattern(Some(DOTTED_DOMAIN_PATTERN))
            .description(Some(
                "An email address (RFC 5322 addr-spec, at most 254 characters, no surrounding \
                 whitespace) whose domain holds a dot.",
            ))
            .examples(["ada@example.com"])
            .into()
    }
}

impl ToSchema for Email {}

/// A person's name: 1 to 100 characters, no control characters, not only
/// whitespace. Stored without its surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    /// Parses a name as sent (the length counts surrounding whitespace, as
    /// the document's `maxLength` does), then trims it.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        parse_label(raw, MAX_FULL_NAME_CHARS).map(Self)
    }

    /// The name.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl PartialSchema for FullName {
    fn schema() -> RefOr<Schema> {
        label_schema(
            MAX_FULL_NAME_CHARS,
            "A name shown to people: 1 to 100 characters, no control characters, not only \
             whitespace (surrounding whitespace is dropped).",
            "Ada Lovelace",
        )
    }
}

impl ToSchema for FullName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_kept_as_typed() {
        assert_eq!(
            Email::parse("Ada@Example.com")
                .expect("a plain address is valid")
                .into_inner(),
            "Ada@Example.com"
        );
        for bad in [
            "",
            " ada@example.com",
            "ada@example.com\n",
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "a b@example.com",
            "ada@example.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(
            FullName::parse("  Ada Lovelace ")
                .expect("a plain name with surrounding spaces is valid")
                .into_inner(),
            "Ada Lovelace"
        );
        assert!(FullName::parse("   ").is_err());
        assert!(FullName::parse("\u{3000}\u{a0}").is_err());
        assert!(FullName::parse(&"x".repeat(101)).is_err());
        // The length counts what was sent, as the document's maxLength does.
        assert!(FullName::parse(&format!(" {}", "x".repeat(100))).is_err());
        assert!(FullName::parse("a\u{0}b").is_err());
        assert!(FullName::parse("Ada\n").is_err());
        assert!(FullName::parse(&"é".repeat(100)).is_ok());
    }
}
