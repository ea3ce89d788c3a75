//! Rows of the `users` table and the value types a user is made of.
//!
//! Input is parsed into these types once, at the edge (`Email::parse`,
//! `FullName::parse`), so nothing deeper can hold an invalid value.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::{AsChangeset, Insertable, Queryable, Selectable};
use uuid::Uuid;

use crate::shared::schema::users;
use crate::shared::validation::Invalid;

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

/// A syntactically valid email address, as the user typed it (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses an address per RFC 5322's addr-spec, up to 254 characters.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        if trimmed.chars().count() > 254 {
            return Err(Invalid::new("must be at most 254 characters"));
        }
        let valid = email_address::EmailAddress::parse_with_options(
            trimmed,
            email_address::Options::default().without_display_text(),
        )
        .is_ok();
        // A dot in the domain rules out intranet hosts like `user@localhost`.
        let has_dotted_domain = trimmed
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain.contains('.') && !domain.ends_with('.'));
        if valid && has_dotted_domain {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(Invalid::new("is not a valid email address"))
        }
    }

    /// The address.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A person's name: 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    /// Parses a name, trimming surrounding whitespace.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        let length = trimmed.chars().count();
        if length == 0 {
            return Err(Invalid::new("must not be empty"));
        }
        if length > 100 {
            return Err(Invalid::new("must be at most 100 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Invalid::new("must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name.
    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_kept_as_typed() {
        assert_eq!(
            Email::parse(" Ada@Example.com ")
                .expect("a plain address with surrounding spaces is valid")
                .into_inner(),
            "Ada@Example.com"
        );
        for bad in [
            "",
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
        assert!(FullName::parse(&"x".repeat(101)).is_err());
        assert!(FullName::parse("a\u{0}b").is_err());
        assert!(FullName::parse(&"é".repeat(100)).is_ok());
    }
}
