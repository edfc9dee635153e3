//! Tokens and credentials: random opaque tokens (stored only as SHA-256 hashes), verification
//! codes, and the IoT Hub style Shared Access Signatures the MQTT gateway checks on CONNECT.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rand::Rng;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Writes a file only its owner may read (the admin token, the TLS private key): created with
/// mode 0600, and set so again when it already existed with wider permissions.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }
}

/// A new random token: a prefix naming its kind and 32 random bytes, base64url.
pub(crate) fn random_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// 32 random bytes (keys).
pub(crate) fn random_key() -> [u8; 32] {
    rand::rng().random()
}

/// Hex SHA-256 of a token: what the database keeps instead of the token.
pub(crate) fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A verification code a technician compares with the device's display: `XXXX-XXXX` from an
/// alphabet without look-alike characters.
pub(crate) fn verification_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    code
}

/// HMAC-SHA256 of `message` under `key`, base64.
pub(crate) fn sign(key: &[u8], message: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac accepts keys of any length");
    mac.update(message.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature_b64` is `sign(key, message)`, compared in constant time.
pub(crate) fn verify(key: &[u8], message: &str, signature_b64: &str) -> bool {
    let Ok(signature) = STANDARD.decode(signature_b64) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac accepts keys of any length");
    mac.update(message.as_bytes());
    mac.verify_slice(&signature).is_ok()
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// What a valid Shared Access Signature grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SasClaims {
    /// Resource URI, `<host>/devices/<workspaceId>:<deviceId>`.
    pub(crate) resource: String,
    /// Expiry, seconds since the Unix epoch.
    pub(crate) expiry_seconds: i64,
    /// Id of the Registration Token the credential was issued for (`skn`).
    pub(crate) registration_token_id: String,
}

/// Why a Shared Access Signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SasError {
    /// The string is not `SharedAccessSignature sr=..&sig=..&se=..&skn=..`.
    #[error("malformed shared access signature: {0}")]
    Malformed(&'static str),
    /// The signature does not match (forged or tampered).
    #[error("shared access signature does not verify")]
    BadSignature,
    /// The signature has expired.
    #[error("shared access signature expired")]
    Expired,
}

/// Issue `SharedAccessSignature sr=..&sig=..&se=..&skn=..` for a device resource.
pub(crate) fn issue_sas(key: &[u8], resource: &str, expiry_seconds: i64, token_id: &str) -> String {
    let sr = encode(resource);
    let signature = sign(key, &format!("{sr}\n{expiry_seconds}\n{token_id}"));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry_seconds}&skn={}",
        encode(&signature),
        encode(token_id)
    )
}

/// Check a Shared Access Signature's form, signature and expiry.
pub(crate) fn verify_sas(key: &[u8], sas: &str, now_seconds: i64) -> Result<SasClaims, SasError> {
    let fields = sas
        .strip_prefix("SharedAccessSignature ")
        .ok_or(SasError::Malformed(
            "missing `SharedAccessSignature ` prefix",
        ))?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in fields.split('&') {
        let (key, value) = pair
            .split_once('=')
            .ok_or(SasError::Malformed("field without `=`"))?;
        match key {
            "sr" => sr = Some(value),
            "sig" => sig = Some(value),
            "se" => se = Some(value),
            "skn" => skn = Some(value),
            _ => {}
        }
    }
    let sr = sr.ok_or(SasError::Malformed("missing `sr`"))?;
    let sig = sig.ok_or(SasError::Malformed("missing `sig`"))?;
    let se = se.ok_or(SasError::Malformed("missing `se`"))?;
    let skn = skn.ok_or(SasError::Malformed("missing `skn`"))?;
    let decode = |v: &str| {
        percent_decode_str(v)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| SasError::Malformed("field is not percent-encoded UTF-8"))
    };
    let token_id = decode(skn)?;
    if !verify(key, &format!("{sr}\n{se}\n{token_id}"), &decode(sig)?) {
        return Err(SasError::BadSignature);
    }
    let expiry_seconds: i64 = se
        .parse()
        .map_err(|_| SasError::Malformed("`se` is not a number"))?;
    if expiry_seconds <= now_seconds {
        return Err(SasError::Expired);
    }
    Ok(SasClaims {
        resource: decode(sr)?,
        expiry_seconds,
        registration_token_id: token_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_round_trip_and_tamper() {
        let key = random_key();
        let sas = issue_sas(&key, "localhost/devices/ws:dev", 2_000, "rt-1");
        let claims = verify_sas(&key, &sas, 1_000).unwrap();
        assert_eq!(claims.resource, "localhost/devices/ws:dev");
        assert_eq!(claims.registration_token_id, "rt-1");
        assert_eq!(verify_sas(&key, &sas, 2_000), Err(SasError::Expired));
        let forged = sas.replace("se=2000", "se=3000");
        assert_eq!(
            verify_sas(&key, &forged, 1_000),
            Err(SasError::BadSignature)
        );
        assert!(matches!(
            verify_sas(&key, "garbage", 0),
            Err(SasError::Malformed(_))
        ));
    }

    #[test]
    fn verification_codes_have_the_documented_shape() {
        let code = verification_code();
        assert_eq!(code.len(), 9);
        assert_eq!(&code[4..5], "-");
    }
}
