//! The text of an API key: `tsk_<id>_<secret>`.
//!
//! The recognisable `tsk_` prefix lets secret scanners find a leaked key; the
//! id (32 hex digits) finds the stored row without a scan; the secret is 256
//! random bits, of which only a SHA-256 is stored. 256 random bits need no slow
//! hash: nobody can guess them, so a fast one suffices to keep a database copy
//! useless.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::shared::error::AppError;

/// What every API key starts with, and what tells one from an access token.
pub const KEY_PREFIX: &str = "tsk_";

/// Characters of the id part (an undashed UUID).
const ID_CHARS: usize = 32;

/// Characters of the secret part (32 bytes, base64url without padding).
const SECRET_CHARS: usize = 43;

/// A key just made: the text for its owner (shown once) and what is stored.
pub struct MintedKey {
    /// The key's id, also its row's.
    pub id: Uuid,
    /// The whole key, for the owner; never stored or logged.
    pub text: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
}

/// A key as a client presented it, parsed.
pub struct PresentedKey {
    /// The id it names.
    pub id: Uuid,
    secret_hash: [u8; 32],
}

impl PresentedKey {
    /// Whether the secret matches the stored hash, compared in constant time
    /// so the answer's timing says nothing about how much of it matched.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        self.secret_hash.ct_eq(stored_hash).into()
    }
}

/// Whether a bearer credential is meant as an API key (rather than a JWT).
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX)
}

/// A new key with a random secret.
pub fn mint() -> Result<MintedKey, AppError> {
    let id = Uuid::now_v7();
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(AppError::internal)?;
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    Ok(MintedKey {
        id,
        text: format!("{}_{secret}", display_prefix(id)),
        secret_hash: hash(&secret).to_vec(),
    })
}

/// The part of a key that is not secret, `tsk_<id>`: what lists show so an
/// owner can tell which key is which.
pub fn display_prefix(id: Uuid) -> String {
    format!("{KEY_PREFIX}{}", id.simple())
}

/// Parses a key exactly as [`mint`] writes it; anything else is `None`.
pub fn parse(text: &str) -> Option<PresentedKey> {
    let rest = text.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = (rest.get(..ID_CHARS)?, rest.get(ID_CHARS..)?);
    let secret = secret.strip_prefix('_')?;
    if secret.len() != SECRET_CHARS {
        return None;
    }
    let lowercase_hex = id
        .bytes()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    let base64url = secret
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !lowercase_hex || !base64url {
        return None;
    }
    Some(PresentedKey {
        id: Uuid::try_parse(id).ok()?,
        secret_hash: hash(secret),
    })
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_key_parses_back_to_its_id_and_matches_its_hash() {
        let key = mint().expect("the system has randomness");
        assert!(key.text.starts_with(&display_prefix(key.id)));
        assert_eq!(
            key.text.len(),
            KEY_PREFIX.len() + ID_CHARS + 1 + SECRET_CHARS
        );
        assert!(is_api_key(&key.text));
        let presented = parse(&key.text).expect("a minted key parses");
        assert_eq!(presented.id, key.id);
        assert!(presented.matches(&key.secret_hash));
    }

    #[test]
    fn two_keys_never_share_a_secret() {
        let (a, b) = (mint().expect("random"), mint().expect("random"));
        assert_ne!(a.secret_hash, b.secret_hash);
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn a_changed_secret_does_not_match() {
        let key = mint().expect("random");
        let mut tampered = key.text.clone();
        let last = tampered.pop().expect("keys are not empty");
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let presented = parse(&tampered).expect("still well-formed");
        assert_eq!(presented.id, key.id);
        assert!(!presented.matches(&key.secret_hash));
    }

    #[test]
    fn malformed_keys_are_refused_before_any_lookup() {
        let key = mint().expect("random").text;
        let id_part = &key[KEY_PREFIX.len()..KEY_PREFIX.len() + ID_CHARS];
        for malformed in [
            String::new(),
            "tsk_".to_owned(),
            key.replacen("tsk_", "tsx_", 1),
            key.replacen('_', "", 2),
            key.replace(id_part, &id_part.to_uppercase()),
            format!("{key}A"),
            key[..key.len() - 1].to_owned(),
            format!("{}!", &key[..key.len() - 1]),
            format!("{KEY_PREFIX}g{}", &key[KEY_PREFIX.len() + 1..]),
            format!("{key}é"),
        ] {
            assert!(parse(&malformed).is_none(), "{malformed:?} parsed");
        }
    }
}
