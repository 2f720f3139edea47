//! TLS (`rediss://`) against a real redis-server that only speaks TLS and verifies
//! clients: a private CA and a client certificate from the config work; an untrusted
//! server, a missing client certificate or plain text against a TLS port fail at
//! construction, promptly, as configuration errors or outages, never as a hang.

#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nautilus_core::{Error, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(tag: u16) -> Certs {
        let dir = std::env::temp_dir().join(format!("nautilus-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl is needed for the TLS tests: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=nautilus test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        for name in ["server", "client"] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN=nautilus {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ]);
        }
        Certs { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    fn file(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn tls_with_a_private_ca_and_a_client_certificate() {
    let port = common::free_port();
    let certs = Certs::new(port);
    let port_s = port.to_string();
    let (crt, key, ca) = (
        certs.path("server.crt"),
        certs.path("server.key"),
        certs.path("ca.crt"),
    );
    let (ccrt, ckey) = (certs.path("client.crt"), certs.path("client.key"));
    let _server = common::durable_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port_s,
            "--tls-cert-file",
            &crt,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "yes",
        ],
        &["--tls", "--cacert", &ca, "--cert", &ccrt, "--key", &ckey],
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let ns = common::fresh_namespace();
    let config = || RedisConfig::new(&url).namespace(&ns);

    let registry = RedisRegistry::connect(
        config()
            .tls_ca_file(certs.file("ca.crt"))
            .tls_client_cert(certs.file("client.crt"), certs.file("client.key")),
    )
    .await
    .unwrap();
    let v = registry
        .put_with_ttl("k", "over tls", Duration::from_secs(60))
        .await
        .unwrap();
    let entry = registry.entry("k").await.unwrap().unwrap();
    assert_eq!((&entry.value[..], entry.version), (&b"over tls"[..], v));
    let batch = registry.get_many(&["k", "missing"]).await;
    assert!(batch[0].as_ref().unwrap().is_some() && batch[1].as_ref().unwrap().is_none());
    assert_eq!(registry.count().await.unwrap(), 1);
    registry.clear().await.unwrap();
    registry.close().await.unwrap();

    // The server asks for a client certificate and gets none.
    let err = common::refused(
        config().tls_ca_file(certs.file("ca.crt")),
        "connected without the client certificate",
    )
    .await;
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");

    // The system's roots do not know the private CA.
    let err = common::refused(
        config().tls_client_cert(certs.file("client.crt"), certs.file("client.key")),
        "trusted a certificate from an unknown CA",
    )
    .await;
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");

    // Plain text to a TLS port.
    let err = common::refused(
        RedisConfig::new(format!("redis://127.0.0.1:{port}")).namespace(&ns),
        "plain text worked on a TLS port",
    )
    .await;
    assert!(
        matches!(err, Error::Unavailable { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
}
