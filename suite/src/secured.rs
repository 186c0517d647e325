//! Brokers that need credentials or TLS, as production clusters do: tansu with SASL/SCRAM
//! users, behind a stunnel TLS front whose CA each test makes for itself.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;

use crate::{free_port, poll_until, tansu_bin, unique, Broker, Storage};

/// A SASL/SCRAM user: tansu stores its credentials for SCRAM-SHA-256 and SCRAM-SHA-512.
#[derive(Debug, Clone)]
pub struct ScramUser {
    pub name: String,
    pub password: String,
}

impl ScramUser {
    /// A user with a random name and password.
    pub fn new(prefix: &str) -> Self {
        ScramUser {
            name: unique(prefix),
            password: unique("password"),
        }
    }
}

/// What a secured broker requires.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// SASL/SCRAM users; none: no authentication.
    pub scram_users: Vec<ScramUser>,
    /// Clients connect through TLS (a stunnel front with a certificate for 127.0.0.1 and
    /// localhost, signed by a CA made for this broker).
    pub tls: bool,
}

impl Security {
    /// `security.protocol` for clients of a broker secured like this.
    pub fn protocol(&self) -> &'static str {
        match (self.scram_users.is_empty(), self.tls) {
            (true, false) => "PLAINTEXT",
            (true, true) => "SSL",
            (false, false) => "SASL_PLAINTEXT",
            (false, true) => "SASL_SSL",
        }
    }
}

impl Broker {
    /// A sqlite broker secured as `security` says. The harness's own clients log in as the
    /// first user (SCRAM-SHA-512) and trust the CA.
    pub fn start_secured(security: &Security) -> Broker {
        let port = free_port();
        let front_port = if security.tls { free_port() } else { port };
        let mut broker = Broker::launch(port, front_port, Storage::Sqlite, None);
        if !security.scram_users.is_empty() {
            // tansu creates users through AlterUserScramCredentials, which its own client
            // sends without logging in: so they are made before authentication is turned on.
            for user in &security.scram_users {
                for mechanism in ["scram256", "scram512"] {
                    create_scram_user(&broker, user, mechanism);
                }
            }
            broker.relaunch(&["--authentication"]);
        }
        broker
            .client_settings
            .push(("security.protocol".into(), security.protocol().into()));
        if let Some(user) = security.scram_users.first() {
            broker.client_settings.extend([
                ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
                ("sasl.username".into(), user.name.clone()),
                ("sasl.password".into(), user.password.clone()),
            ]);
        }
        if security.tls {
            let front = TlsFront::start(front_port, port);
            broker.client_settings.push((
                "ssl.ca.location".into(),
                front.ca_path().display().to_string(),
            ));
            broker.companions.push(Box::new(front));
        }
        broker
    }

    /// The CA file clients of this broker's TLS front must trust, if it has one.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.client_settings
            .iter()
            .find(|(key, _)| key == "ssl.ca.location")
            .map(|(_, value)| PathBuf::from(value))
    }
}

fn create_scram_user(broker: &Broker, user: &ScramUser, mechanism: &str) {
    let output = Command::new(tansu_bin())
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{}", broker.port))
        .args(["--mechanism", mechanism, &user.name, &user.password])
        .output()
        .expect("run tansu user create");
    assert!(
        output.status.success(),
        "tansu user create {} ({mechanism}) failed: {}{}",
        user.name,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// stunnel terminating TLS on `port` in front of a plaintext port; stopped on drop.
pub struct TlsFront {
    child: Child,
    dir: TempDir,
}

impl TlsFront {
    /// Starts stunnel (Debian's stunnel4) with a fresh CA and a server certificate it signed.
    pub fn start(port: u16, target: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca, certificate, key) = make_certificates();
        std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
        std::fs::write(dir.path().join("server.pem"), certificate).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        let config = dir.path().join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{target}\ncert = {}\nkey = {}\n",
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("stunnel.log")).unwrap();
        let mut child = Command::new(stunnel_bin())
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start stunnel (apt install stunnel4; scripts/install-deps.sh does)");
        let mut exited = None;
        let up = poll_until(Duration::from_secs(10), || {
            exited = child.try_wait().unwrap();
            exited.is_some() || TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let log = || std::fs::read_to_string(dir.path().join("stunnel.log")).unwrap_or_default();
        assert!(
            exited.is_none() && up.is_some(),
            "stunnel did not listen on {port} ({exited:?}); its log:\n{}",
            log()
        );
        TlsFront { child, dir }
    }

    /// The CA certificate (PEM) that signed the front's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stunnel_bin() -> &'static str {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if on_path("stunnel4") {
        "stunnel4"
    } else {
        "stunnel"
    }
}

/// A CA, and a server certificate for 127.0.0.1 and localhost signed by it, with the server's
/// key: (CA PEM, certificate PEM, key PEM).
pub fn make_certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kstreams test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_certificate = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_certificate = server
        .signed_by(&server_key, &ca_certificate, &ca_key)
        .unwrap();
    (
        ca_certificate.pem(),
        server_certificate.pem(),
        server_key.serialize_pem(),
    )
}
