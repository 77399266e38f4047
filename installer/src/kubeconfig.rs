//! Kubeconfig files with everything embedded (`*-data` fields), so a single file is enough to
//! reach the cluster: one cluster, one user, one context, which is also the current one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::pki::KeyPairPem;

/// A kubeconfig with embedded CA, client cert and key (base64 *-data fields), one
/// cluster/user/context. The context is named `<user>@<cluster_name>` (as kubeadm does) and is
/// the current context.
pub fn render(
    cluster_name: &str,
    server_url: &str,
    ca_pem: &str,
    client: &KeyPairPem,
    user: &str,
) -> String {
    let context_name = format!("{user}@{cluster_name}");
    let cluster_name = quote(cluster_name);
    let user = quote(user);
    let context_name = quote(&context_name);
    let server_url = quote(server_url);
    // Base64 is plain-scalar safe in YAML: no quoting needed, and it keeps the file diffable
    // against kubeadm's output.
    let ca_data = STANDARD.encode(ca_pem);
    let cert_data = STANDARD.encode(&client.cert_pem);
    let key_data = STANDARD.encode(&client.key_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {cluster_name}
  cluster:
    certificate-authority-data: {ca_data}
    server: {server_url}
contexts:
- name: {context_name}
  context:
    cluster: {cluster_name}
    user: {user}
current-context: {context_name}
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: {cert_data}
    client-key-data: {key_data}
"
    )
}

/// A YAML double-quoted scalar. JSON string syntax is a subset of it, so names with `:`, `#`,
/// leading `@` or anything else YAML would otherwise interpret stay plain strings.
fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("serialising a string cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> KeyPairPem {
        KeyPairPem {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Kubeconfig {
        current_context: String,
        clusters: Vec<Named<Cluster>>,
        contexts: Vec<Named<Context>>,
        users: Vec<Named<User>>,
    }
    #[derive(serde::Deserialize)]
    struct Named<T> {
        name: String,
        #[serde(alias = "cluster", alias = "context", alias = "user")]
        body: T,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Cluster {
        server: String,
        certificate_authority_data: String,
    }
    #[derive(serde::Deserialize)]
    struct Context {
        cluster: String,
        user: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct User {
        client_certificate_data: String,
        client_key_data: String,
    }

    fn decode(data: &str) -> String {
        String::from_utf8(STANDARD.decode(data).unwrap()).unwrap()
    }

    #[test]
    fn names_that_look_like_yaml_syntax_stay_strings() {
        // `#` would start a comment, `: ` a mapping, a leading `*` an alias, `true` a boolean.
        let text = render(
            "prod: #1",
            "https://10.88.0.10:6443",
            "CA",
            &client(),
            "*true",
        );
        let config: Kubeconfig = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(config.clusters[0].name, "prod: #1");
        assert_eq!(config.users[0].name, "*true");
        assert_eq!(config.contexts[0].name, "*true@prod: #1");
        assert_eq!(config.current_context, "*true@prod: #1");
        assert_eq!(config.contexts[0].body.cluster, "prod: #1");
        assert_eq!(config.contexts[0].body.user, "*true");
        assert_eq!(config.clusters[0].body.server, "https://10.88.0.10:6443");
        assert_eq!(
            decode(&config.clusters[0].body.certificate_authority_data),
            "CA"
        );
        assert_eq!(
            decode(&config.users[0].body.client_certificate_data),
            client().cert_pem
        );
        assert_eq!(
            decode(&config.users[0].body.client_key_data),
            client().key_pem
        );
    }
}
