//! Feishu's payload encryption and request signature.
//!
//! Encryption: AES-256-CBC, key = SHA-256(encrypt key), the first 16 bytes of
//! the base64-decoded blob are the IV. Signature: lowercase hex of
//! SHA-256(timestamp ‖ nonce ‖ encrypt key ‖ raw body bytes).

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

const BLOCK: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("encrypt field is not valid base64")]
    BadBase64,
    #[error("ciphertext is shorter than one block or not a whole number of blocks")]
    BadLength,
    #[error("decrypted payload has neither valid padding nor a JSON object")]
    NoPlaintext,
}

/// The AES key derived from the console's Encrypt Key, plus the key itself,
/// which the signature needs.
#[derive(Clone)]
pub struct EncryptKey {
    raw: Vec<u8>,
    aes: [u8; 32],
}

impl std::fmt::Debug for EncryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptKey([redacted])")
    }
}

impl EncryptKey {
    pub fn new(encrypt_key: &str) -> Self {
        EncryptKey {
            raw: encrypt_key.as_bytes().to_vec(),
            aes: Sha256::digest(encrypt_key.as_bytes()).into(),
        }
    }

    /// Decrypts the `encrypt` field of a callback body.
    pub fn decrypt(&self, encrypted: &str) -> Result<Vec<u8>, DecryptError> {
        self.decrypt_decoded(&Ciphertext::decode(encrypted)?)
    }

    /// Decrypts an `encrypt` field already decoded, so that trying a second
    /// key does not decode it again.
    pub fn decrypt_decoded(&self, blob: &Ciphertext) -> Result<Vec<u8>, DecryptError> {
        let (iv, ciphertext) = blob.0.split_at(BLOCK);
        let mut buf = ciphertext.to_vec();
        // `Ciphertext::decode` checked the lengths, so neither `split_at` nor
        // the calls below can fail; map rather than unwrap so that no input
        // can reach a panic.
        let dec =
            Aes256CbcDec::new_from_slices(&self.aes, iv).map_err(|_| DecryptError::BadLength)?;
        let plain_len = dec
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| DecryptError::BadLength)?
            .len();
        buf.truncate(plain_len);
        strip_padding(buf)
    }

    /// Encrypts `plaintext` the way Feishu does (PKCS#7 padding), returning the
    /// base64 text for the `encrypt` field. Used by the demo and by tests that
    /// play Feishu's part.
    pub fn encrypt(&self, plaintext: &[u8], iv: [u8; BLOCK]) -> String {
        let enc = Aes256CbcEnc::new(&self.aes.into(), &iv.into());
        let ciphertext = enc.encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(plaintext);
        let mut blob = Vec::with_capacity(BLOCK + ciphertext.len());
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&ciphertext);
        STANDARD.encode(blob)
    }

    /// Lowercase hex SHA-256 over timestamp ‖ nonce ‖ key ‖ body.
    pub fn sign(&self, timestamp: &str, nonce: &str, body: &[u8]) -> String {
        hex::encode(self.digest(timestamp, nonce, body))
    }

    /// Checks `X-Lark-Signature` in constant time. Uppercase hex is accepted
    /// because it encodes the same digest.
    pub fn verify(&self, timestamp: &str, nonce: &str, body: &[u8], signature: &str) -> bool {
        decode_signature(signature)
            .is_some_and(|provided| self.verify_decoded(timestamp, nonce, body, &provided))
    }

    /// [`EncryptKey::verify`] for a signature already decoded by
    /// [`decode_signature`] (once, however many keys are tried).
    pub fn verify_decoded(
        &self,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
        provided: &[u8; 32],
    ) -> bool {
        let expected = self.digest(timestamp, nonce, body);
        expected.ct_eq(provided).into()
    }

    fn digest(&self, timestamp: &str, nonce: &str, body: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(timestamp.as_bytes());
        h.update(nonce.as_bytes());
        h.update(&self.raw);
        h.update(body);
        h.finalize().into()
    }
}

/// `X-Lark-Signature` as the 32 bytes it encodes (upper- or lowercase hex,
/// surrounding whitespace ignored); `None` when it is not that, which no key
/// matches.
pub fn decode_signature(signature: &str) -> Option<[u8; 32]> {
    let mut provided = [0u8; 32];
    hex::decode_to_slice(signature.trim(), &mut provided).ok()?;
    Some(provided)
}

/// The `encrypt` field, base64-decoded: an IV and at least one whole block.
pub struct Ciphertext(Vec<u8>);

impl Ciphertext {
    pub fn decode(encrypted: &str) -> Result<Self, DecryptError> {
        let blob = STANDARD
            .decode(encrypted.as_bytes())
            .map_err(|_| DecryptError::BadBase64)?;
        if blob.len() < 2 * BLOCK || blob.len() % BLOCK != 0 {
            return Err(DecryptError::BadLength);
        }
        Ok(Ciphertext(blob))
    }
}

/// Strips valid PKCS#7 padding; otherwise falls back to the Go SDK's rule of
/// keeping the bytes from the first `{` to the last `}`, so that payloads the
/// Go SDK accepts are accepted here too.
fn strip_padding(mut buf: Vec<u8>) -> Result<Vec<u8>, DecryptError> {
    if let Some(&n) = buf.last() {
        let n = n as usize;
        if (1..=BLOCK).contains(&n)
            && n <= buf.len()
            && buf[buf.len() - n..].iter().all(|&b| b as usize == n)
        {
            buf.truncate(buf.len() - n);
            return Ok(buf);
        }
    }
    let start = buf.iter().position(|&b| b == b'{');
    let end = buf.iter().rposition(|&b| b == b'}');
    match (start, end) {
        (Some(s), Some(e)) if s < e => {
            buf.truncate(e + 1);
            buf.drain(..s);
            Ok(buf)
        }
        _ => Err(DecryptError::NoPlaintext),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let k = EncryptKey::new("test key");
        let text = k.encrypt(r#"{"a":"\u4e2d 中"}"#.as_bytes(), [7; 16]);
        assert_eq!(k.decrypt(&text).unwrap(), r#"{"a":"\u4e2d 中"}"#.as_bytes());
    }

    #[test]
    fn rejects_short_and_misaligned_and_bad_base64() {
        let k = EncryptKey::new("k");
        assert_eq!(k.decrypt("not base64!"), Err(DecryptError::BadBase64));
        assert_eq!(
            k.decrypt(&STANDARD.encode([0u8; 16])),
            Err(DecryptError::BadLength)
        );
        assert_eq!(
            k.decrypt(&STANDARD.encode([0u8; 40])),
            Err(DecryptError::BadLength)
        );
        assert_eq!(k.decrypt(""), Err(DecryptError::BadLength));
    }

    #[test]
    fn go_style_fallback_when_padding_is_not_pkcs7() {
        // Zero padding (as some encoders do): not PKCS#7, but Go would trim to braces.
        let key = EncryptKey::new("k");
        let mut plain = br#"{"x":1}"#.to_vec();
        plain.resize(16, 0);
        let enc = Aes256CbcEnc::new(&key.aes.into(), &[1u8; 16].into());
        let mut buf = plain.clone();
        let ct = enc
            .encrypt_padded_mut::<NoPadding>(&mut buf, 16)
            .unwrap()
            .to_vec();
        let mut blob = vec![1u8; 16];
        blob.extend_from_slice(&ct);
        assert_eq!(key.decrypt(&STANDARD.encode(blob)).unwrap(), br#"{"x":1}"#);
    }

    #[test]
    fn signature_is_over_exact_bytes() {
        let k = EncryptKey::new("key");
        let sig = k.sign("1600000000", "nonce", b"{\"encrypt\":\"x\"}");
        assert!(k.verify("1600000000", "nonce", b"{\"encrypt\":\"x\"}", &sig));
        assert!(k.verify(
            "1600000000",
            "nonce",
            b"{\"encrypt\":\"x\"}",
            &sig.to_uppercase()
        ));
        assert!(!k.verify("1600000000", "nonce", b"{\"encrypt\": \"x\"}", &sig));
        assert!(!k.verify("1600000001", "nonce", b"{\"encrypt\":\"x\"}", &sig));
        assert!(!k.verify("1600000000", "nonce", b"{\"encrypt\":\"x\"}", "zz"));
    }

    proptest! {
        #[test]
        fn encrypt_decrypt_round_trips(key in ".{0,64}", payload in proptest::collection::vec(any::<u8>(), 0..600), iv in any::<[u8; 16]>()) {
            let k = EncryptKey::new(&key);
            let text = k.encrypt(&payload, iv);
            prop_assert_eq!(k.decrypt(&text).unwrap(), payload);
        }

        #[test]
        fn signature_verifies_only_for_signed_bytes(body in proptest::collection::vec(any::<u8>(), 0..256), other in proptest::collection::vec(any::<u8>(), 0..256), ts in "[0-9]{1,12}", nonce in "[a-z0-9]{0,16}") {
            let k = EncryptKey::new("prop key");
            let sig = k.sign(&ts, &nonce, &body);
            prop_assert!(k.verify(&ts, &nonce, &body, &sig));
            if other != body {
                prop_assert!(!k.verify(&ts, &nonce, &other, &sig));
            }
        }

        #[test]
        fn decrypt_never_panics(text in ".{0,200}") {
            let _ = EncryptKey::new("k").decrypt(&text);
        }
    }
}
