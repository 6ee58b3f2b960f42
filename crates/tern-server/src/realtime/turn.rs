//! TURN credentials (issue 11, docs/PROTOCOL.md §4.10): `GetTurnCredentials`
//! answered on the connection's shard with time-limited credentials for the
//! relays in `turn_urls`, per draft-uberti-behave-turn-rest-00 §2.2 (the
//! "TURN REST API" coturn implements as `use-auth-secret` /
//! `static-auth-secret`):
//!
//! - `username` = `"<expiry>:<user>"`, expiry in unix seconds
//!   (now + `turn_ttl_secs`);
//! - `password` = base64 (RFC 4648 §4, padded) of HMAC-SHA1 (RFC 2104)
//!   of `username`, keyed by `turn_secret`.
//!
//! The relay recomputes the password from the shared secret and refuses it
//! after the expiry, so the server keeps nothing per credential. This module
//! also owns the three settings' validation and [`TurnSecret`], which never
//! prints its value.

use base64::Engine;
use ring::hmac;

use crate::config::{check, ConfigError, ServerConfig};
use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;
use tern_proto::body::calls::TurnCredentials;
use tern_proto::fb::ErrorCode;

/// Most relay URIs `turn_urls` may list.
pub const MAX_TURN_URLS: usize = 16;
/// Shortest and longest credential lifetime, seconds (`turn_ttl_secs`).
pub const TURN_TTL_RANGE_SECS: std::ops::RangeInclusive<u32> = 60..=604_800;
/// URI schemes a relay entry may use (RFC 7064 `stun:`/`stuns:`, RFC 7065
/// `turn:`/`turns:`).
const SCHEMES: [&str; 4] = ["turn:", "turns:", "stun:", "stuns:"];

/// The secret shared with the TURN relays (coturn's `static-auth-secret`).
/// Its `Debug` never shows the value, so a logged config does not leak it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TurnSecret(pub String);

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(<redacted>)")
    }
}

/// Why credentials cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// `turn_urls` / `turn_secret` are unset: this server has no relay.
    #[error("this server has no TURN relay configured (turn_urls, turn_secret); calls can use direct paths only")]
    NotConfigured,
}

/// Checks `turn_urls`, `turn_secret` and `turn_ttl_secs`: both of the first
/// two or neither; each URI a `turn:`, `turns:`, `stun:` or `stuns:` one
/// without whitespace or control characters, at most [`MAX_TURN_URLS`];
/// a non-empty secret; a lifetime within [`TURN_TTL_RANGE_SECS`].
///
/// # Errors
/// `ConfigError::Invalid` naming the field.
pub fn validate(config: &ServerConfig) -> Result<(), ConfigError> {
    check(
        TURN_TTL_RANGE_SECS.contains(&config.turn_ttl_secs),
        "turn_ttl_secs",
        "must be 60 to 604800 (seconds)",
    )?;
    check(
        config.turn_urls.is_empty() == config.turn_secret.is_none(),
        "turn_secret",
        "set turn_urls and turn_secret together (or neither, for no TURN relay)",
    )?;
    check(
        config.turn_secret.as_ref().is_none_or(|s| !s.0.is_empty()),
        "turn_secret",
        "must not be empty (coturn's static-auth-secret)",
    )?;
    check(
        config.turn_urls.len() <= MAX_TURN_URLS,
        "turn_urls",
        "at most 16 relay URIs",
    )?;
    for url in &config.turn_urls {
        let scheme_ok = SCHEMES
            .iter()
            .any(|s| url.starts_with(s) && url.len() > s.len());
        let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
        check(
            scheme_ok && clean,
            "turn_urls",
            "each entry is a turn:, turns:, stun: or stuns: URI (RFC 7065, RFC 7064) such as turn:turn.example.org:3478",
        )?;
    }
    Ok(())
}

/// The credentials for `user` at `now_ms` (unix milliseconds).
///
/// # Errors
/// [`TurnError::NotConfigured`] where `turn_secret` is unset.
pub fn credentials(
    config: &ServerConfig,
    user: &str,
    now_ms: u64,
) -> Result<TurnCredentials, TurnError> {
    let Some(secret) = &config.turn_secret else {
        return Err(TurnError::NotConfigured);
    };
    let expiry = (now_ms / 1000).saturating_add(u64::from(config.turn_ttl_secs));
    let username = format!("{expiry}:{user}");
    Ok(TurnCredentials {
        urls: config.turn_urls.clone(),
        password: password(secret, &username),
        username,
        ttl_secs: config.turn_ttl_secs,
    })
}

/// base64(HMAC-SHA1(secret, username)): the draft's password. SHA-1 is the
/// draft's and coturn's choice; HMAC-SHA1 has no known practical weakness.
fn password(secret: &TurnSecret, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.0.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// GetTurnCredentials: the caller's credentials.
///
/// # Errors
/// `NotConfigured` where this server has no TURN relay.
pub async fn get(ctx: &ShardCtx, caller: &Caller) -> Result<Outcome, Reject> {
    let made = credentials(&ctx.config, &caller.user, ctx.clock.now_ms())
        .map_err(|e| Reject::new(ErrorCode::NotConfigured, e.to_string()))?;
    Ok(Outcome::immediate(Ok(made.into())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn configured() -> ServerConfig {
        ServerConfig {
            turn_urls: vec!["turn:turn.example.org:3478".into()],
            turn_secret: Some(TurnSecret("north".into())),
            turn_ttl_secs: 3600,
            ..ServerConfig::default()
        }
    }

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // RFC 2202 §3, test case 2: key "Jefe", data "what do ya want for nothing?".
        let secret = TurnSecret("Jefe".into());
        let expected = hex::decode("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(expected);
        assert_eq!(password(&secret, "what do ya want for nothing?"), b64);
    }

    #[test]
    fn credentials_follow_the_draft() {
        let made = credentials(&configured(), "alice", 1_700_000_000_999).unwrap();
        assert_eq!(made.username, "1700003600:alice");
        assert_eq!(made.ttl_secs, 3600);
        assert_eq!(made.urls, vec!["turn:turn.example.org:3478".to_owned()]);
        assert_eq!(made.password.len(), 28, "20 bytes in padded base64");
    }

    #[test]
    fn unconfigured_is_a_typed_error() {
        let err = credentials(&ServerConfig::default(), "alice", 0).unwrap_err();
        assert_eq!(err, TurnError::NotConfigured);
    }

    #[test]
    fn validation() {
        assert!(validate(&configured()).is_ok());
        assert!(validate(&ServerConfig::default()).is_ok());
        let bad = [
            ServerConfig {
                turn_secret: None,
                ..configured()
            },
            ServerConfig {
                turn_urls: vec![],
                ..configured()
            },
            ServerConfig {
                turn_secret: Some(TurnSecret(String::new())),
                ..configured()
            },
            ServerConfig {
                turn_urls: vec!["http://x".into()],
                ..configured()
            },
            ServerConfig {
                turn_urls: vec!["turn:".into()],
                ..configured()
            },
            ServerConfig {
                turn_urls: vec!["turn:a b".into()],
                ..configured()
            },
            ServerConfig {
                turn_urls: vec!["turn:a".into(); 17],
                ..configured()
            },
            ServerConfig {
                turn_ttl_secs: 59,
                ..configured()
            },
            ServerConfig {
                turn_ttl_secs: 604_801,
                ..configured()
            },
        ];
        for config in bad {
            assert!(validate(&config).is_err(), "{config:?}");
        }
    }

    #[test]
    fn secret_is_not_printed() {
        assert!(!format!("{:?}", configured()).contains("north"));
    }
}
