//! Which check types take which fields of the `check` table: a field given
//! to a type that ignores it is a mistake worth an error. Every builder
//! relies on this one table instead of refusing fields itself.

use super::{CheckConfig, CheckType};
use crate::check::Owner;

use CheckType::{Dns, Exec, Http, Https, Postgres, Tcp, Udp};

/// The types that take a field, and how the message names them.
struct Takers {
    types: &'static [CheckType],
    names: &'static str,
}

const NETWORK: Takers =
    Takers { types: &[Tcp, Http, Https, Udp, Dns, Postgres], names: "tcp, http, https, udp, dns and postgres" };
const HTTP_LIKE: Takers = Takers { types: &[Http, Https], names: "http and https" };
const HTTPS: Takers = Takers { types: &[Https], names: "https" };
const UDP: Takers = Takers { types: &[Udp], names: "udp" };
const DNS: Takers = Takers { types: &[Dns], names: "dns" };
const EXEC: Takers = Takers { types: &[Exec], names: "exec" };
const USER: Takers = Takers { types: &[Exec, Postgres], names: "exec and postgres" };
const POSTGRES: Takers = Takers { types: &[Postgres], names: "postgres" };

/// A field of the table: its name, whether it is set, the types that take it.
type Field = (&'static str, bool, Takers);

impl CheckConfig {
    /// Every field that only some types take (`interval`, `timeout`, `rise`
    /// and `fall` are for all).
    fn typed_fields(&self) -> [Field; 22] {
        [
            ("port", self.port.is_some(), NETWORK),
            ("path", self.path.is_some(), HTTP_LIKE),
            ("status", self.status.is_some(), HTTP_LIKE),
            ("body", self.body.is_some(), HTTP_LIKE),
            ("host", self.host.is_some(), HTTP_LIKE),
            ("command", self.command.is_some(), EXEC),
            ("user", self.user.is_some(), USER),
            ("dynamic", self.dynamic.is_some(), EXEC),
            ("sni", self.sni.is_some(), HTTPS),
            ("ca_file", self.ca_file.is_some(), HTTPS),
            ("tls_verify", self.tls_verify.is_some(), HTTPS),
            ("payload", self.payload.is_some(), UDP),
            ("payload_hex", self.payload_hex.is_some(), UDP),
            ("expect", self.expect.is_some(), UDP),
            ("name", self.name.is_some(), DNS),
            ("query_type", self.query_type.is_some(), DNS),
            ("rcode", self.rcode.is_some(), DNS),
            ("answer", self.answer.is_some(), DNS),
            ("database", self.database.is_some(), POSTGRES),
            ("login", self.login.is_some(), POSTGRES),
            ("query", self.query.is_some(), POSTGRES),
            ("password_file", self.password_file.is_some(), POSTGRES),
        ]
    }

    /// Refuse a field this check's type does not take.
    pub(super) fn refuse_fields_of_other_types(&self, what: Owner<'_>) -> Result<(), String> {
        for (field, present, takers) in self.typed_fields() {
            if present && !takers.types.contains(&self.kind) {
                let (names, kind) = (takers.names, self.kind.name());
                return Err(format!("{what}: check field `{field}` is for {names} checks, not {kind}"));
            }
        }
        Ok(())
    }

    /// What can be checked of the table without a real server or the system
    /// (for the config's own validation, with file, line and column): fields
    /// of other types, and the `https`, `udp` and `dns` settings (a readable
    /// `ca_file`, valid hex, a query name...). `director run` checks the
    /// rest when it loads the config.
    pub fn validate(&self) -> Result<(), String> {
        let what = format!("{} check", self.kind.name());
        self.refuse_fields_of_other_types(&what)?;
        match self.kind {
            Https => self.tls_settings(&what).map(drop),
            Udp => self.udp(1, &what).map(drop),
            Dns => self.dns(1, &what).map(drop),
            Tcp | Http | Exec | Postgres => Ok(()),
        }
    }
}

/// A check of `kind` with `timeout` and the further `fields` (TOML inline
/// table entries) as the config reads it: parsed, validated, resolved for a
/// real server on `port`. For the check types' own tests.
#[cfg(test)]
pub(crate) fn test_check(kind: &str, timeout: &str, fields: &str, port: u16) -> Result<super::Check, String> {
    #[derive(serde::Deserialize)]
    struct W {
        check: CheckConfig,
    }
    let text = format!("check = {{ type = \"{kind}\", timeout = \"{timeout}\", {fields} }}");
    let c = toml::from_str::<W>(&text).map_err(|e| e.to_string())?.check;
    c.validate()?;
    c.resolve(port, &"real server")
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(service: &str) -> String {
        let text = format!("[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 53\n{service}");
        Config::parse(&text, "t.toml").and_then(|c| c.director()).unwrap_err().0
    }

    /// The settings of the newer check types are checked with the config,
    /// and their errors name the file, line and column like any other.
    #[test]
    fn check_errors_name_the_place() {
        let e = err("real = [\"10.0.0.2\"]\ncheck = { type = \"dns\" }\n");
        assert!(e.starts_with("t.toml:3:1: dns check: a dns check needs the `name` to query"), "{e}");
        let e = err("real = [{ addr = \"10.0.0.2\", check = { type = \"https\", ca_file = \"/nonexistent.pem\" } }]\n");
        assert!(e.starts_with("t.toml:6:9: https check: https check ca_file /nonexistent.pem: "), "{e}");
        let e = err("real = [\"10.0.0.2\"]\ncheck = { type = \"udp\", payload = \"x\", sni = \"a\" }\n");
        assert!(e.starts_with("t.toml:3:1: udp check: check field `sni` is for https checks, not udp"), "{e}");
        let e = err("real = [\"10.0.0.2\"]\ncheck = { type = \"tcp\", answer = \"10.0.0.9\" }\n");
        assert!(e.starts_with("t.toml:3:1: tcp check: check field `answer` is for dns checks, not tcp"), "{e}");
        let e = err("real = [\"10.0.0.2\"]\ncheck = { type = \"udp\", paylaod = \"x\" }\n");
        assert!(e.starts_with("t.toml:7:") && e.contains("unknown field `paylaod`"), "{e}");
    }

    /// The example of docs/health-daemon.md's "https, udp and dns checks" section loads.
    #[test]
    fn the_docs_example_loads() {
        let doc = include_str!("../../../docs/health-daemon.md");
        let section = &doc[doc.find("### https, udp and dns checks").expect("the section")..];
        let start = section.find("```toml\n").expect("a TOML example") + "```toml\n".len();
        let body = &section[start..];
        let text = format!("[director]\niface = \"e\"\n{}", &body[..body.find("```").unwrap()]);
        let d = Config::parse(&text, "health-daemon.md").and_then(|c| c.director()).unwrap();
        let kinds: Vec<_> = d.services.iter().map(|s| s.checks[0].as_ref().unwrap().kind).collect();
        assert_eq!(kinds, [super::Https, super::Dns, super::Udp]);
    }
}
