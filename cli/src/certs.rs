//! `dtest certs DIR`: a private CA and the certificates a test cluster needs for TLS and mutual
//! TLS, made with rcgen: `ca.pem` (every peer's `--cacert` and `--tls-client-ca`),
//! `server.pem`/`server-key.pem` (nodes and `dtest serve`: it serves and identifies them as
//! clients too) and `client.pem`/`client-key.pem` (`dtest run`, `dtest mcp --orchestrator`).
//! Keys are written readable by their owner only. Nothing is overwritten without `--force`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

use crate::Exit;

/// The longest validity, days.
const DAYS_MAX: u64 = 3650;
/// Host names and addresses at most.
const HOSTS_MAX: usize = 100;

/// Arguments of `dtest certs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to write the files to (made if missing).
    dir: PathBuf,
    /// A host name or IP address the servers are reached at, besides localhost, 127.0.0.1 and
    /// ::1 (repeatable).
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Days the certificates are valid, from now.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=DAYS_MAX))]
    days: u64,
    /// Replace files already in DIR.
    #[arg(long)]
    force: bool,
}

/// The files `dtest certs` writes, and whether each is a private key.
const FILES: [(&str, bool); 6] = [
    ("ca.pem", false),
    ("ca-key.pem", true),
    ("server.pem", false),
    ("server-key.pem", true),
    ("client.pem", false),
    ("client-key.pem", true),
];

pub fn run(args: &Args) -> Exit {
    match make(args) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::BadInput
        }
    }
}

fn make(args: &Args) -> Result<(), String> {
    if args.hosts.len() > HOSTS_MAX {
        return Err(format!("--host: at most {HOSTS_MAX}"));
    }
    if !args.force
        && let Some((name, _)) = FILES.iter().find(|(name, _)| args.dir.join(name).exists())
    {
        return Err(format!("{}: already there; --force replaces it", args.dir.join(name).display()));
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let pems = issue(&args.hosts, args.days).map_err(|e| format!("cannot make the certificates: {e}"))?;
    for ((name, private), pem) in FILES.iter().zip(pems) {
        write(&args.dir.join(name), &pem, *private)?;
    }
    let dir = args.dir.display();
    println!("wrote a CA and certificates to {dir}:");
    println!("  nodes and serve:  --tls-cert {dir}/server.pem --tls-key {dir}/server-key.pem --cacert {dir}/ca.pem");
    println!("  mutual TLS:       add --tls-client-ca {dir}/ca.pem to nodes and serve");
    println!(
        "  run, mcp:         --cacert {dir}/ca.pem --client-cert {dir}/client.pem --client-key {dir}/client-key.pem"
    );
    Ok(())
}

/// The six PEM texts, in [`FILES`]' order.
fn issue(hosts: &[String], days: u64) -> Result<Vec<String>, rcgen::Error> {
    let (year, month, day) = today();
    let not_before = date_time_ymd(year, month, day);
    let not_after = not_before + Duration::from_secs(days * 86_400);
    let named = |common_name: &str, mut params: CertificateParams| {
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.not_before = not_before;
        params.not_after = not_after;
        params
    };

    let ca_key = KeyPair::generate()?;
    // A name of its own (from its key), so a peer holding another `dtest certs` CA's certificate
    // is told its issuer is unknown rather than that a signature did not verify.
    let fingerprint: String = ca_key.public_key_raw().iter().rev().take(4).map(|b| format!("{b:02x}")).collect();
    let mut ca = named(&format!("dtest test-cluster CA {fingerprint}"), CertificateParams::new(Vec::<String>::new())?);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let (ca_pem, ca_key_pem) = (ca_cert.pem(), ca_key.serialize_pem());
    let issuer = Issuer::new(ca, ca_key);

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    names.extend(hosts.iter().filter(|h| !names.contains(h)).cloned().collect::<Vec<_>>());
    let server_key = KeyPair::generate()?;
    let mut server = named("dtest server", CertificateParams::new(names)?);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client = named("dtest client", CertificateParams::new(Vec::<String>::new())?);
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer)?;

    Ok(vec![
        ca_pem,
        ca_key_pem,
        server_cert.pem(),
        server_key.serialize_pem(),
        client_cert.pem(),
        client_key.serialize_pem(),
    ])
}

/// Today's date, UTC: certificates start at the day's beginning, so a peer whose clock is a
/// little behind still accepts them.
fn today() -> (i32, u8, u8) {
    let days = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// Writes `text` to `path`, readable by its owner only when `private`.
fn write(path: &Path, text: &str, private: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_civil_date() {
        // Within a day of now, whatever the calendar.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let (year, month, day) = today();
        let midnight = date_time_ymd(year, month, day).unix_timestamp();
        assert!((0..86_400).contains(&(now - midnight)), "{now} {midnight}");
    }
}
