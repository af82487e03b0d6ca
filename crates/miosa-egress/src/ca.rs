//! The per-sandbox certificate authority that HTTPS interception signs its
//! leaf certificates with. The sandbox trusts it (its PEM goes into the
//! sandbox's trust bundle); nothing else does, so a leaked CA key can only
//! fool that one sandbox, and only until it expires.

use std::fmt;

use miosa_core::SandboxId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::EgressError;

/// How long a sandbox CA is valid. A sandbox that lives longer needs a new
/// CA (and a new trust bundle) before then.
pub const CA_VALIDITY: Duration = Duration::days(30);
/// How long a leaf certificate is valid (never past its CA).
pub const LEAF_VALIDITY: Duration = Duration::hours(24);
/// How far back validity starts, for clocks running a little behind.
const BACKDATE: Duration = Duration::hours(1);

/// A sandbox's CA: a P-256 key and a self-signed certificate valid for
/// [`CA_VALIDITY`], which signs leaf certificates valid for
/// [`LEAF_VALIDITY`]. The key never leaves the proxy's memory.
pub struct SandboxCa {
    sandbox_id: SandboxId,
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_after: OffsetDateTime,
}

impl fmt::Debug for SandboxCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxCa")
            .field("sandbox_id", &self.sandbox_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A freshly minted leaf: its chain (leaf, then CA) and its key.
pub(crate) struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub not_after: OffsetDateTime,
}

impl SandboxCa {
    /// Makes a new CA for `sandbox`.
    pub(crate) fn generate(sandbox: &SandboxId) -> Result<Self, EgressError> {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("Miosa egress CA for {sandbox}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            sandbox_id: sandbox.clone(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM, for the sandbox's trust bundle.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// When the CA expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The sandbox this CA belongs to.
    pub fn sandbox_id(&self) -> &SandboxId {
        &self.sandbox_id
    }

    /// Mints a leaf certificate for `host` (a DNS name or an IP literal)
    /// with a fresh P-256 key.
    pub(crate) fn mint_leaf(&self, host: &str) -> Result<Leaf, EgressError> {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        params.distinguished_name = name(host);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = (now + LEAF_VALIDITY).min(self.not_after);
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            not_after: params.not_after,
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Miosa");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 16 random bytes: serials must differ between certificates of one issuer.
fn random_serial() -> Result<SerialNumber, EgressError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| EgressError::Config(format!("the system random source failed: {e}")))?;
    // Positive, as DER integers go.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_chain_to_the_ca_and_expire_before_it() {
        let ca = SandboxCa::generate(&SandboxId::generate()).unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let a = ca.mint_leaf("api.openai.com").unwrap();
        let b = ca.mint_leaf("10.0.0.1").unwrap();
        assert_eq!(a.chain.len(), 2);
        assert_eq!(a.chain[1], *ca.cert_der());
        assert_ne!(a.chain[0], b.chain[0]);
        assert!(a.not_after <= ca.not_after());
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
