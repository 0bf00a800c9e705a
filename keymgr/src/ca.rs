//! The local certificate authority: created at `keymgr init`, it signs the
//! server's TLS certificate and every client certificate issued at
//! registration or renewal. Private keys are written mode 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::util::{random_bytes, sha256_hex};

/// File names under the data directory.
pub struct Paths {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// CA private key (PEM, 0600).
    pub ca_key: PathBuf,
    /// Server certificate (PEM).
    pub server_cert: PathBuf,
    /// Server private key (PEM, 0600).
    pub server_key: PathBuf,
    /// Master key (raw, 0600).
    pub master_key: PathBuf,
    /// SQLite database.
    pub db: PathBuf,
}

impl Paths {
    /// The layout under `dir`.
    pub fn new(dir: &Path) -> Paths {
        Paths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            master_key: dir.join("master.key"),
            db: dir.join("keymgr.db"),
        }
    }
}

/// Write a new file with mode 0600; refuses to overwrite.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Write a new public file (mode 0644); refuses to overwrite.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn write_public(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Refuse a private file that group or others can read or write.
///
/// # Errors
/// When the file is missing or too open.
pub fn check_private_mode(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is accessible to group or others; chmod 600 it",
            path.display()
        ));
    }
    Ok(())
}

fn random_serial() -> Result<SerialNumber, String> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte to strip
    Ok(SerialNumber::from_slice(&b))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "GuardFS");
    d.push(DnType::CommonName, cn);
    d
}

/// Create the CA and the server certificate for `sans` under the paths.
///
/// # Errors
/// When a file exists already, a SAN is invalid or writing fails.
pub fn init(paths: &Paths, sans: &[String]) -> Result<(), String> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = dn("GuardFS keymgr local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::minutes(5);
    ca.not_after = now + Duration::days(3650);
    ca.serial_number = Some(random_serial()?);
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(|e| format!("CA cert: {e}"))?;

    let srv_key = KeyPair::generate().map_err(|e| format!("server key: {e}"))?;
    let mut srv = CertificateParams::new(sans.to_vec()).map_err(|e| format!("bad --san: {e}"))?;
    srv.distinguished_name = dn(sans.first().map_or("keymgr", String::as_str));
    srv.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    srv.not_before = now - Duration::minutes(5);
    srv.not_after = now + Duration::days(825);
    srv.serial_number = Some(random_serial()?);
    srv.use_authority_key_identifier_extension = true;
    let issuer = Issuer::new(ca, ca_key);
    let srv_cert = srv
        .signed_by(&srv_key, &issuer)
        .map_err(|e| format!("server cert: {e}"))?;

    write_private(&paths.ca_key, issuer.key().serialize_pem().as_bytes())?;
    write_public(&paths.ca_cert, ca_cert.pem().as_bytes())?;
    write_private(&paths.server_key, srv_key.serialize_pem().as_bytes())?;
    write_public(&paths.server_cert, srv_cert.pem().as_bytes())?;
    Ok(())
}

/// The CA, loaded for signing client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), handed to clients.
    pub cert_pem: String,
}

/// A certificate issued to a client.
pub struct Issued {
    /// PEM.
    pub pem: String,
    /// Serial (hex).
    pub serial: String,
    /// SHA-256 of the DER (hex).
    pub fingerprint: String,
    /// Unix time it expires.
    pub not_after: i64,
}

impl Ca {
    /// Load the CA from the data directory.
    ///
    /// # Errors
    /// When files are missing, unreadable or too open.
    pub fn load(paths: &Paths) -> Result<Ca, String> {
        check_private_mode(&paths.ca_key)?;
        let key_pem = std::fs::read_to_string(&paths.ca_key)
            .map_err(|e| format!("cannot read {}: {e}", paths.ca_key.display()))?;
        let cert_pem = std::fs::read_to_string(&paths.ca_cert)
            .map_err(|e| format!("cannot read {}: {e}", paths.ca_cert.display()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("CA key: {e}"))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| format!("CA cert: {e}"))?;
        Ok(Ca { issuer, cert_pem })
    }

    /// Sign a client certificate for the public key in `csr_pem`. Nothing
    /// else of the request is trusted: the subject is the client name and
    /// id, the usage is TLS client authentication only.
    ///
    /// # Errors
    /// A message fit for the requester when the CSR is unusable.
    pub fn sign_client(
        &self,
        csr_pem: &str,
        client_name: &str,
        client_id: &str,
        days: i64,
    ) -> Result<Issued, String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("unusable CSR: {e}"))?;
        let now = OffsetDateTime::now_utc();
        let mut p = CertificateParams::default();
        let mut d = dn(client_name);
        d.push(DnType::OrganizationalUnitName, client_id);
        p.distinguished_name = d;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + Duration::days(days);
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.to_bytes());
        p.serial_number = Some(serial);
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| format!("cannot sign certificate: {e}"))?;
        Ok(Issued {
            pem: cert.pem(),
            serial: serial_hex,
            fingerprint: sha256_hex(cert.der()),
            not_after: p.not_after.unix_timestamp(),
        })
    }
}
