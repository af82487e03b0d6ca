//! Secret input as the API receives it, and its validation into typed form.

use miosa_core::{
    sandbox::label, secret, FieldError, Redacted, SandboxId, SecretScope, SubstituteIn, WorkspaceId,
};
use miosa_store::SecretFilter;

/// `POST /v1/secrets`: the scope's key comes in the field named after it.
#[derive(Debug, Clone, Default)]
pub struct SetSecret {
    pub name: String,
    pub value: Redacted<String>,
    pub scope: String,
    pub expose_as_env: String,
    pub allowed_hosts: Option<Vec<String>>,
    pub substitute_in: Option<Vec<String>>,
    pub sandbox_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    /// The key of scope `workspace`; for the end-user scopes (`user`,
    /// `external_user`, `external_workspace`) the workspace the secret is
    /// bound to.
    pub workspace_id: Option<String>,
}

pub(crate) struct ValidSecret {
    pub name: String,
    pub value: Redacted<String>,
    pub scope: SecretScope,
    pub scope_key: Option<String>,
    pub expose_as_env: String,
    /// `None`: not given (a new version keeps the current list).
    pub allowed_hosts: Option<Vec<String>>,
    /// `None`: not given (a new version keeps the current locations).
    pub substitute_in: Option<SubstituteIn>,
    /// The workspace binding asked for (end-user scopes only).
    pub binding: Option<WorkspaceId>,
}

/// The key fields in request order, with their values.
fn key_fields<'a>(
    sandbox_id: &'a Option<String>,
    owner_user_id: &'a Option<String>,
    external_user_id: &'a Option<String>,
    external_workspace_id: &'a Option<String>,
    workspace_id: &'a Option<String>,
) -> [(SecretScope, &'a Option<String>); 5] {
    [
        (SecretScope::Sandbox, sandbox_id),
        (SecretScope::User, owner_user_id),
        (SecretScope::ExternalUser, external_user_id),
        (SecretScope::ExternalWorkspace, external_workspace_id),
        (SecretScope::Workspace, workspace_id),
    ]
}

/// Checks a scope key's form: IDs for Miosa resources, labels otherwise.
fn scope_key(scope: SecretScope, field: &str, value: &str) -> Result<String, FieldError> {
    match scope {
        SecretScope::Sandbox => SandboxId::parse(value)
            .map(|id| id.as_str().to_owned())
            .map_err(|e| FieldError::new(field, e.to_string())),
        SecretScope::Workspace => WorkspaceId::parse(value)
            .map(|id| id.as_str().to_owned())
            .map_err(|e| FieldError::new(field, e.to_string())),
        _ => label(field, value),
    }
}

fn parse_scope(value: &str) -> Result<SecretScope, FieldError> {
    SecretScope::parse(value).ok_or_else(|| {
        let all: Vec<&str> = SecretScope::PRECEDENCE.iter().map(|s| s.as_str()).collect();
        FieldError::new("scope", format!("must be one of {}", all.join(", ")))
    })
}

impl SetSecret {
    pub(crate) fn validate(self) -> Result<ValidSecret, FieldError> {
        let name = secret::secret_name("name", &self.name)?;
        secret::secret_value("value", self.value.expose())?;
        let scope = parse_scope(&self.scope)?;
        let expose_as_env = secret::expose_as_env("expose_as_env", &self.expose_as_env)?;
        let allowed_hosts = self
            .allowed_hosts
            .as_deref()
            .map(|h| secret::allowed_hosts("allowed_hosts", h))
            .transpose()?;
        let substitute_in = self
            .substitute_in
            .as_deref()
            .map(|s| secret::substitute_in("substitute_in", s))
            .transpose()?;
        // `workspace_id` binds an end-user secret to a workspace; it is not
        // that scope's key.
        let (binding, workspace_key) = if scope.is_end_user() {
            let binding = self
                .workspace_id
                .as_deref()
                .map(|w| {
                    WorkspaceId::parse(w)
                        .map_err(|e| FieldError::new("workspace_id", e.to_string()))
                })
                .transpose()?;
            (binding, None)
        } else {
            (None, self.workspace_id)
        };
        let mut scope_key_value = None;
        for (s, v) in key_fields(
            &self.sandbox_id,
            &self.owner_user_id,
            &self.external_user_id,
            &self.external_workspace_id,
            &workspace_key,
        ) {
            let field = s.key_field().unwrap_or("scope");
            match (s == scope, v) {
                (true, Some(v)) => scope_key_value = Some(scope_key(s, field, v)?),
                (true, None) => {
                    return Err(FieldError::new(
                        field,
                        format!("is required for scope `{}`", scope.as_str()),
                    ))
                }
                (false, Some(_)) => {
                    return Err(FieldError::new(
                        field,
                        format!("does not apply to scope `{}`", scope.as_str()),
                    ))
                }
                (false, None) => {}
            }
        }
        Ok(ValidSecret {
            name,
            value: self.value,
            scope,
            scope_key: scope_key_value,
            expose_as_env,
            allowed_hosts,
            substitute_in,
            binding,
        })
    }
}

/// `GET /v1/secrets` filters. A scope key alone implies its scope;
/// `workspace_id` selects the secrets belonging to that workspace (its
/// `workspace` secrets and those bound to it).
#[derive(Debug, Clone, Default)]
pub struct ListSecrets {
    pub scope: Option<String>,
    pub name: Option<String>,
    pub sandbox_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub workspace_id: Option<String>,
}

impl ListSecrets {
    pub(crate) fn validate(self) -> Result<SecretFilter, FieldError> {
        let mut scope = self.scope.as_deref().map(parse_scope).transpose()?;
        let mut key = None;
        let workspace_id = self
            .workspace_id
            .as_deref()
            .map(|w| {
                WorkspaceId::parse(w).map_err(|e| FieldError::new("workspace_id", e.to_string()))
            })
            .transpose()?;
        for (s, v) in key_fields(
            &self.sandbox_id,
            &self.owner_user_id,
            &self.external_user_id,
            &self.external_workspace_id,
            &None,
        ) {
            let Some(v) = v else { continue };
            let field = s.key_field().unwrap_or("scope");
            if key.is_some() {
                return Err(FieldError::new(field, "give at most one scope key filter"));
            }
            match scope {
                Some(given) if given != s => {
                    return Err(FieldError::new(
                        field,
                        format!("does not apply to scope `{}`", given.as_str()),
                    ))
                }
                _ => scope = Some(s),
            }
            key = Some(scope_key(s, field, v)?);
        }
        let name = self
            .name
            .map(|n| secret::secret_name("name", &n))
            .transpose()?;
        Ok(SecretFilter {
            scope,
            scope_key: key,
            name,
            workspace_id,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn base() -> SetSecret {
        SetSecret {
            name: "openai".into(),
            value: Redacted::new("sk-test-0123456789".into()),
            scope: "external_user".into(),
            expose_as_env: "OPENAI_API_KEY".into(),
            external_user_id: Some("dr_smith@clinic1.example".into()),
            ..Default::default()
        }
    }

    #[test]
    fn scope_keys_are_required_and_exclusive() {
        let v = base().validate().unwrap();
        assert_eq!(v.scope, SecretScope::ExternalUser);
        assert_eq!(v.scope_key.as_deref(), Some("dr_smith@clinic1.example"));

        let missing = SetSecret {
            external_user_id: None,
            ..base()
        };
        assert_eq!(missing.validate().err().unwrap().field, "external_user_id");

        let extra = SetSecret {
            owner_user_id: Some("u1".into()),
            ..base()
        };
        assert_eq!(extra.validate().err().unwrap().field, "owner_user_id");

        // For an end-user scope, `workspace_id` is a binding, not a key.
        let bound = SetSecret {
            workspace_id: Some("ws_01jdq3x5m8v2k7f4c9n6r1w0ab".into()),
            ..base()
        }
        .validate()
        .unwrap();
        assert_eq!(
            bound.binding.map(|w| w.to_string()).as_deref(),
            Some("ws_01jdq3x5m8v2k7f4c9n6r1w0ab")
        );
        let bad_binding = SetSecret {
            workspace_id: Some("nope".into()),
            ..base()
        };
        assert_eq!(bad_binding.validate().err().unwrap().field, "workspace_id");
        let tenant_bound = SetSecret {
            scope: "tenant".into(),
            external_user_id: None,
            workspace_id: Some("ws_01jdq3x5m8v2k7f4c9n6r1w0ab".into()),
            ..base()
        };
        assert_eq!(tenant_bound.validate().err().unwrap().field, "workspace_id");

        let tenant = SetSecret {
            scope: "tenant".into(),
            external_user_id: None,
            ..base()
        };
        assert_eq!(tenant.validate().unwrap().scope_key, None);

        let bad_sandbox = SetSecret {
            scope: "sandbox".into(),
            external_user_id: None,
            sandbox_id: Some("nope".into()),
            ..base()
        };
        assert_eq!(bad_sandbox.validate().err().unwrap().field, "sandbox_id");
    }

    #[test]
    fn fields_are_named() {
        let cases: Vec<(SetSecret, &str)> = vec![
            (
                SetSecret {
                    name: "a b".into(),
                    ..base()
                },
                "name",
            ),
            (
                SetSecret {
                    value: Redacted::new("short".into()),
                    ..base()
                },
                "value",
            ),
            (
                SetSecret {
                    scope: "global".into(),
                    ..base()
                },
                "scope",
            ),
            (
                SetSecret {
                    expose_as_env: "HTTPS_PROXY".into(),
                    ..base()
                },
                "expose_as_env",
            ),
            (
                SetSecret {
                    allowed_hosts: Some(vec!["ok.example".into(), "http://x".into()]),
                    ..base()
                },
                "allowed_hosts[1]",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(input.validate().err().unwrap().field, field);
        }
    }

    #[test]
    fn list_filters() {
        let f = ListSecrets {
            external_user_id: Some("u1".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(f.scope, Some(SecretScope::ExternalUser));
        assert_eq!(f.scope_key.as_deref(), Some("u1"));
        let e = ListSecrets {
            scope: Some("tenant".into()),
            external_user_id: Some("u1".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "external_user_id");
    }
}
