//! JWT authentication for every transport: HS256 with a shared secret, or RS256/ES256 with
//! a PEM public key. `sub` is the user id; a configurable claim carries the role(s).

use std::path::PathBuf;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::event::User;

/// Longest `sub` accepted, in bytes. Every transport works for any accepted `sub` (its
/// private room `user:<sub>` is exempt from the room-name limit); a longer one is refused
/// at verification with a 401 that says so, the same answer on every transport.
pub const MAX_SUB_BYTES: usize = 1024;

/// `Debug` redacts the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM file with an RS256 or ES256 public key.
    pub public_key_file: Option<PathBuf>,
    /// Claim that carries the role (a string or an array of strings).
    pub role_claim: String,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Boolean claims that grant a role when true, e.g. `{ isAdmin = "admin" }`
    /// (`ROWCAST_JWT_FLAG_ROLES=isAdmin=admin,isAgent=agent`).
    #[serde(deserialize_with = "crate::serde_ext::string_map")]
    pub flag_roles: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("public_key_file", &self.public_key_file)
            .field("role_claim", &self.role_claim)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .field("flag_roles", &self.flag_roles)
            .finish()
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret: None,
            public_key_file: None,
            role_claim: "role".into(),
            audience: None,
            issuer: None,
            leeway_secs: 5,
            flag_roles: Default::default(),
        }
    }
}

impl JwtConfig {
    /// What is wrong with this section, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.secret.is_some() && self.public_key_file.is_some() {
            problems.push(
                "set either ROWCAST_JWT_SECRET (HS256) or ROWCAST_JWT_PUBLIC_KEY_FILE (RS256/ES256), not both"
                    .to_string(),
            );
        }
        if let Some(secret) = &self.secret
            && secret.len() < 16
        {
            problems.push("jwt.secret (ROWCAST_JWT_SECRET) must be at least 16 bytes".into());
        }
        if let Some(path) = &self.public_key_file
            && !path.exists()
        {
            problems.push(format!(
                "jwt.public_key_file {} does not exist",
                path.display()
            ));
        }
        problems
    }
}

/// Why a request was not authenticated. Rendered as HTTP 401 with a JSON body.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token: send `Authorization: Bearer <jwt>` or `?token=<jwt>`")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({ "error": "unauthorized", "message": self.to_string() })),
        )
            .into_response()
    }
}

/// Verifies tokens. Built once at start from the configuration.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    role_claim: String,
    flag_roles: Vec<(String, String)>,
    /// HS256 only: lets `rowcast demo` and tests issue tokens.
    signer: Option<EncodingKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no JWT key configured: set ROWCAST_JWT_SECRET (HS256) or ROWCAST_JWT_PUBLIC_KEY_FILE (RS256/ES256 PEM)"
    )]
    NoKey,
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{0}")]
    Bad(String),
}

impl Authenticator {
    pub fn from_config(c: &JwtConfig) -> Result<Authenticator, KeyError> {
        let (key, alg, signer) = if let Some(secret) = &c.secret {
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| KeyError::Bad(e.to_string()))?;
            let signer = EncodingKey::from_secret(secret.as_bytes())
                .map_err(|e| KeyError::Bad(e.to_string()))?;
            (key, Algorithm::HS256, Some(signer))
        } else if let Some(path) = &c.public_key_file {
            let pem = std::fs::read(path).map_err(|err| KeyError::Read {
                path: path.display().to_string(),
                err,
            })?;
            if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                (k, Algorithm::RS256, None)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (k, Algorithm::ES256, None)
            } else {
                return Err(KeyError::Bad(format!(
                    "{} is not an RSA or EC public key in PEM format",
                    path.display()
                )));
            }
        } else {
            return Err(KeyError::NoKey);
        };
        let mut validation = Validation::new(alg);
        validation.leeway = c.leeway_secs;
        // `nbf`, when present, is checked with the same leeway as `exp` (jsonwebtoken leaves
        // it unchecked by default): a token issued for later is refused until then.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(aud) = &c.audience {
            validation.set_audience(&[aud]);
        } else {
            validation.validate_aud = false;
        }
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Authenticator {
            key,
            validation,
            role_claim: c.role_claim.clone(),
            flag_roles: c
                .flag_roles
                .iter()
                .map(|(claim, role)| (claim.clone(), role.to_lowercase()))
                .collect(),
            signer,
        })
    }

    /// Verifies a token and extracts the user.
    pub fn verify(&self, token: &str) -> Result<User, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
            ErrorKind::InvalidAlgorithm => {
                AuthError::Invalid("unexpected signing algorithm".into())
            }
            ErrorKind::MissingRequiredClaim(c) => {
                AuthError::Invalid(format!("missing claim {c:?}"))
            }
            ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
            ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
            ErrorKind::ImmatureSignature => AuthError::Invalid("token not valid yet".into()),
            _ => AuthError::Invalid("malformed token".into()),
        })?;
        let claims = data.claims;
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if s.len() > MAX_SUB_BYTES => {
                return Err(AuthError::Invalid(format!(
                    "`sub` is {} bytes long; at most {MAX_SUB_BYTES} are accepted",
                    s.len()
                )));
            }
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(AuthError::Invalid(
                    "`sub` must be a non-empty string".into(),
                ));
            }
        };
        // Roles compare case-insensitively (an ORM's enum is often `AGENT`).
        let mut roles: Vec<String> = match claims.get(&self.role_claim) {
            Some(Value::String(s)) => vec![s.to_lowercase()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_lowercase))
                .collect(),
            _ => Vec::new(),
        };
        for (claim, role) in &self.flag_roles {
            if claims.get(claim) == Some(&Value::Bool(true)) && !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        let exp = claims.get("exp").and_then(Value::as_i64);
        Ok(User { sub, roles, exp })
    }

    /// Token from `Authorization: Bearer …`, else from the `token` query parameter.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<User, AuthError> {
        let token = bearer(headers).or(query_token).ok_or(AuthError::Missing)?;
        self.verify(token)
    }

    /// Issues an HS256 token (demo and tests). `None` when keys are asymmetric.
    pub fn issue(&self, sub: &str, role: &str, ttl_secs: i64) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims =
            json!({ "sub": sub, &self.role_claim: role, "iat": now, "exp": now + ttl_secs });
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, signer).ok()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::from_config(&JwtConfig {
            secret: Some("0123456789abcdef0123".into()),
            ..JwtConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn issued_tokens_verify() {
        let a = auth();
        let t = a.issue("42", "agent", 60).unwrap();
        let u = a.verify(&t).unwrap();
        assert_eq!(u.sub, "42");
        assert_eq!(u.roles, vec!["agent"]);
    }

    #[test]
    fn roles_come_from_a_string_an_array_or_boolean_claims() {
        let mut config = JwtConfig {
            secret: Some("0123456789abcdef0123".into()),
            ..JwtConfig::default()
        };
        config.flag_roles.insert("isAdmin".into(), "Admin".into());
        let a = Authenticator::from_config(&config).unwrap();
        let sign = |claims: Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                a.signer.as_ref().unwrap(),
            )
            .unwrap()
        };
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
        let u = a
            .verify(&sign(json!({"sub": "1", "role": "AGENT", "exp": exp})))
            .unwrap();
        assert_eq!(u.roles, vec!["agent"]);
        let u = a
            .verify(&sign(
                json!({"sub": "7", "role": ["Agent", "OWNER"], "isAdmin": true, "exp": exp}),
            ))
            .unwrap();
        assert_eq!(
            (u.sub.as_str(), u.roles),
            (
                "7",
                vec!["agent".to_string(), "owner".into(), "admin".into()]
            )
        );
        let u = a
            .verify(&sign(json!({"sub": "2", "isAdmin": false, "exp": exp})))
            .unwrap();
        assert!(u.roles.is_empty());
    }

    fn sign(a: &Authenticator, claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            a.signer.as_ref().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn tokens_not_valid_yet_are_refused_within_the_leeway() {
        let a = auth();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let early = sign(
            &a,
            json!({"sub": "1", "exp": now + 172_800, "nbf": now + 86_400}),
        );
        assert_eq!(
            a.verify(&early).unwrap_err(),
            AuthError::Invalid("token not valid yet".into())
        );
        // The default leeway (5 s) covers a clock a little behind the issuer's.
        let skewed = sign(&a, json!({"sub": "1", "exp": now + 60, "nbf": now + 3}));
        assert!(a.verify(&skewed).is_ok());
        let past = sign(&a, json!({"sub": "1", "exp": now + 60, "nbf": now - 60}));
        assert!(a.verify(&past).is_ok());
    }

    #[test]
    fn sub_is_accepted_up_to_its_documented_length() {
        let a = auth();
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
        let long = "u".repeat(MAX_SUB_BYTES);
        let u = a
            .verify(&sign(&a, json!({"sub": long, "exp": exp})))
            .unwrap();
        assert_eq!(u.sub.len(), MAX_SUB_BYTES);
        let over = "u".repeat(MAX_SUB_BYTES + 1);
        let e = a
            .verify(&sign(&a, json!({"sub": over, "exp": exp})))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid token: `sub` is 1025 bytes long; at most 1024 are accepted"
        );
        let e = a
            .verify(&sign(&a, json!({"sub": "", "exp": exp})))
            .unwrap_err();
        assert!(e.to_string().contains("non-empty"), "{e}");
    }

    #[test]
    fn expired_and_forged_tokens_are_refused() {
        let a = auth();
        let t = a.issue("42", "agent", -3600).unwrap();
        assert_eq!(a.verify(&t).unwrap_err(), AuthError::Expired);
        let other = Authenticator::from_config(&JwtConfig {
            secret: Some("another-secret-of-length".into()),
            ..JwtConfig::default()
        })
        .unwrap();
        let forged = other.issue("42", "admin", 60).unwrap();
        assert!(matches!(
            a.verify(&forged).unwrap_err(),
            AuthError::Invalid(_)
        ));
        assert!(matches!(
            a.verify("garbage").unwrap_err(),
            AuthError::Invalid(_)
        ));
    }
}
