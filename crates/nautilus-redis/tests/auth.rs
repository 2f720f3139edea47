//! Password-protected Redis: the default user's `requirepass` and an ACL user, both
//! from the URL as fred takes them; a wrong password fails at construction, promptly,
//! and never shows up in an error or a `Debug` line.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use nautilus_core::{Error, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};

#[tokio::test]
async fn requirepass_and_acl_users_connect_and_a_wrong_password_is_refused() {
    let port = common::free_port();
    let _server = common::durable_with(
        port,
        &[
            "--requirepass",
            "s3cret-default",
            "--user",
            "app",
            "on",
            ">s3cret-app",
            "~*",
            "&*",
            "+@all",
        ],
        &["--no-auth-warning", "-a", "s3cret-default"],
    );
    let ns = common::fresh_namespace();
    for url in [
        format!("redis://:s3cret-default@127.0.0.1:{port}"),
        format!("redis://app:s3cret-app@127.0.0.1:{port}"),
    ] {
        let registry = RedisRegistry::connect(RedisConfig::new(&url).namespace(&ns))
            .await
            .unwrap();
        let v = registry.put("k", "v").await.unwrap();
        assert_eq!(registry.entry("k").await.unwrap().unwrap().version, v);
        assert!(!format!("{registry:?}").contains("s3cret"));
        registry.clear().await.unwrap();
    }
    for url in [
        format!("redis://127.0.0.1:{port}"),
        format!("redis://:wrong-s3cret@127.0.0.1:{port}"),
        format!("redis://app:wrong-s3cret@127.0.0.1:{port}"),
    ] {
        let err = common::refused(
            RedisConfig::new(&url).namespace(&ns),
            "connected without the right password",
        )
        .await;
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{url}: refused credentials are a configuration error, not an outage: {err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cret"), "the password leaked: {text}");
    }
}
