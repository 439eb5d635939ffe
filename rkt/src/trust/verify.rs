//! Checking a detached OpenPGP signature (an `.aci.asc`) over an image file.

use std::io::{Read, Seek, SeekFrom};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;

use super::TrustError;

/// Verifies `signature` (armored or binary) over `data` with any of `keys`
/// (primary keys, or their subkeys with a valid binding); returns the
/// fingerprint of the primary key that signed. `name` is only for messages.
pub fn verify_detached<D: Read + Seek>(
    keys: &[SignedPublicKey],
    signature: &[u8],
    signature_name: &str,
    data: &mut D,
    name: &str,
) -> Result<String, TrustError> {
    if keys.is_empty() {
        return Err(TrustError::NoKeys {
            name: name.to_string(),
        });
    }
    let (detached, _) = DetachedSignature::from_reader_single(signature).map_err(|err| {
        TrustError::BadSignature {
            signature: signature_name.to_string(),
            problem: err.to_string(),
        }
    })?;
    let sig = &detached.signature;
    let issuers: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|fp| format!("{fp:x}"))
        .collect();
    let issuer_ids: Vec<String> = sig.issuer_key_id().iter().map(hex::encode).collect();
    let names_signer = |fingerprint: String, key_id: String| {
        (issuers.is_empty() && issuer_ids.is_empty())
            || issuers.contains(&fingerprint)
            || issuer_ids.contains(&key_id)
    };
    let io_err = |source| TrustError::Io {
        context: "re-reading the image to check its signature".to_string(),
        source,
    };
    for key in keys {
        let primary = format!("{:x}", key.fingerprint());
        if names_signer(primary.clone(), hex::encode(key.legacy_key_id())) {
            data.seek(SeekFrom::Start(0)).map_err(io_err)?;
            if sig.verify(key, &mut *data).is_ok() {
                return Ok(primary);
            }
        }
        for subkey in &key.public_subkeys {
            if !names_signer(
                format!("{:x}", subkey.key.fingerprint()),
                hex::encode(subkey.key.legacy_key_id()),
            ) || subkey.verify_bindings(&key.primary_key).is_err()
            {
                continue;
            }
            data.seek(SeekFrom::Start(0)).map_err(io_err)?;
            if sig.verify(&subkey.key, &mut *data).is_ok() {
                return Ok(primary);
            }
        }
    }
    Err(TrustError::Unverified {
        signature: signature_name.to_string(),
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Cursor;

    use pgp::composed::{KeyType, SecretKeyParamsBuilder, SignedSecretKey};
    use pgp::crypto::hash::HashAlgorithm;
    use pgp::types::Password;

    use super::*;
    use crate::trust::Keystore;

    pub(crate) fn generate_key(user: &str) -> SignedSecretKey {
        SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id(user.into())
            .build()
            .unwrap()
            .generate(rand::thread_rng())
            .unwrap()
    }

    fn sign(key: &SignedSecretKey, data: &[u8]) -> Vec<u8> {
        DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &key.primary_key,
            &Password::empty(),
            HashAlgorithm::Sha512,
            data,
        )
        .unwrap()
        .to_armored_bytes(None.into())
        .unwrap()
    }

    fn name(text: &str) -> appc::AcIdentifier {
        appc::AcIdentifier::try_from(text).unwrap()
    }

    fn armored_public(key: &SignedSecretKey) -> Vec<u8> {
        key.to_public_key().to_armored_bytes(None.into()).unwrap()
    }

    #[test]
    fn trusted_prefix_key_verifies_and_others_do_not() {
        let config = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        let store = Keystore::new(config.path(), system.path());
        let signer = generate_key("Signer <s@example.com>");
        let stranger = generate_key("Stranger <x@example.com>");
        let (info, path) = store
            .add(
                Some("example.com/app"),
                &armored_public(&signer),
                "signer.asc",
            )
            .unwrap();
        assert_eq!(info.user_ids, vec!["Signer <s@example.com>"]);
        assert_eq!(
            path,
            config
                .path()
                .join("trustedkeys/prefix.d/example.com/app")
                .join(&info.fingerprint)
        );

        let image = b"pretend this is an ACI".to_vec();
        let good = sign(&signer, &image);
        let keys = store.keys_for(&name("example.com/app/worker")).unwrap();
        assert_eq!(keys.len(), 1, "a prefix covers names below it");
        let fp = verify_detached(&keys, &good, "i.asc", &mut Cursor::new(&image), "n").unwrap();
        assert_eq!(fp, info.fingerprint);

        // Tampered data, a stranger's signature, a sibling prefix: refused.
        let mut tampered = image.clone();
        tampered[0] ^= 1;
        let err = verify_detached(&keys, &good, "i.asc", &mut Cursor::new(&tampered), "n");
        assert!(matches!(err, Err(TrustError::Unverified { .. })));
        let foreign = sign(&stranger, &image);
        let err = verify_detached(&keys, &foreign, "i.asc", &mut Cursor::new(&image), "n");
        assert!(matches!(err, Err(TrustError::Unverified { .. })));
        assert!(store
            .keys_for(&name("example.com/application"))
            .unwrap()
            .is_empty());
        let err = verify_detached(
            &[],
            &good,
            "i.asc",
            &mut Cursor::new(&image),
            "example.com/x",
        );
        let message = err.unwrap_err().to_string();
        assert!(
            message.contains("rkt trust --prefix=example.com/x"),
            "{message}"
        );
    }

    #[test]
    fn root_keys_cover_everything_and_garbage_is_refused() {
        let config = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        let store = Keystore::new(config.path(), system.path());
        let signer = generate_key("Root <r@example.com>");
        let (info, path) = store
            .add(None, &armored_public(&signer), "root.asc")
            .unwrap();
        assert_eq!(
            path,
            config
                .path()
                .join("trustedkeys/root.d")
                .join(&info.fingerprint)
        );
        assert_eq!(
            store.keys_for(&name("anything.org/at/all")).unwrap().len(),
            1
        );

        let err = store.add(None, b"not a key", "junk.asc").unwrap_err();
        assert!(err.to_string().contains("junk.asc"), "{err}");
        let err = store
            .add(Some("Bad Prefix"), &armored_public(&signer), "k.asc")
            .unwrap_err();
        assert!(matches!(err, TrustError::BadPrefix { .. }));
        let keys = store.keys_for(&name("x")).unwrap();
        let err = verify_detached(&keys, b"garbage", "g.asc", &mut Cursor::new(b"x"), "x");
        assert!(matches!(err, Err(TrustError::BadSignature { .. })));
    }

    #[test]
    fn adding_a_key_never_writes_through_a_planted_link() {
        let config = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let store = Keystore::new(config.path(), system.path());
        let signer = generate_key("Signer <s@example.com>");
        let trusted = config.path().join("trustedkeys");
        fs::create_dir_all(trusted.join("prefix.d")).unwrap();
        for (link, prefix) in [
            ("prefix.d/example.com", Some("example.com/app")),
            ("root.d", None),
        ] {
            std::os::unix::fs::symlink(elsewhere.path(), trusted.join(link)).unwrap();
            let err = store
                .add(prefix, &armored_public(&signer), "signer.asc")
                .unwrap_err();
            // The message names the planted link itself.
            let named = format!("{} is a link", trusted.join(link).display());
            assert!(err.to_string().contains(&named), "{err}");
            assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        }
        // A real directory in the same place works, whatever its depth.
        fs::remove_file(trusted.join("prefix.d/example.com")).unwrap();
        let (info, path) = store
            .add(
                Some("example.com/app"),
                &armored_public(&signer),
                "signer.asc",
            )
            .unwrap();
        assert_eq!(
            path,
            trusted
                .join("prefix.d/example.com/app")
                .join(&info.fingerprint)
        );
        assert!(path.is_file());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
