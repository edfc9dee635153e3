//! One event vocabulary: every event the core has, with every field, and every reason code the
//! core gives, with its fields, is declared in the browser package's TypeScript declarations
//! and in the WIT, so browser and WASI apps receive the same events and reasons. The core lists
//! its vocabulary once (`vdev_core::EVENT_VOCABULARY`, `vdev_core::REASON_VOCABULARY`, checked
//! against what it writes by the core's own tests); this test fails when a declaration lacks an
//! event, a reason code or a field, or declares one the core does not have.

use std::path::Path;

use vdev_core::{EVENT_VOCABULARY, REASON_VOCABULARY};
use wit_parser::{Resolve, Type, TypeDefKind};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `camelCase` as `kebab-case`, the WIT's spelling.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The members of the `DeviceEvent` union, one per line: `| { kind: "name"; field: type; .. }`.
fn typescript_events(declarations: &str) -> Vec<(String, String)> {
    let start = declarations
        .find("export type DeviceEvent =")
        .expect("vdev_web.d.ts declares `export type DeviceEvent`");
    let union = &declarations[start..];
    let union = &union[..union.find(";\n\n").unwrap_or(union.len())];
    union
        .lines()
        .filter_map(|line| {
            let rest = line.split_once("kind: \"")?.1;
            let (name, _) = rest.split_once('"')?;
            Some((name.to_owned(), line.to_owned()))
        })
        .collect()
}

fn check_typescript(declarations: &str) -> Vec<String> {
    let declared = typescript_events(declarations);
    let mut problems = Vec::new();
    for (name, fields) in EVENT_VOCABULARY {
        let Some((_, member)) = declared.iter().find(|(kind, _)| kind == name) else {
            problems.push(format!("DeviceEvent lacks the event `{name}`"));
            continue;
        };
        for field in *fields {
            if !member.contains(&format!(" {field}:")) && !member.contains(&format!(" {field}?:")) {
                problems.push(format!("DeviceEvent `{name}` lacks the field `{field}`"));
            }
        }
    }
    for (kind, _) in &declared {
        if !EVENT_VOCABULARY.iter().any(|(name, _)| name == kind) {
            problems.push(format!(
                "DeviceEvent declares `{kind}`, which the core does not have"
            ));
        }
    }
    problems
}

/// `camelCase` as `PascalCase`, the TypeScript type's spelling.
fn pascal(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Whether a union member's text declares `field` (`field:` or `field?:`, after a space).
fn declares_field(member: &str, field: &str) -> bool {
    member.contains(&format!(" {field}:")) || member.contains(&format!(" {field}?:"))
}

/// The reason unions (`export type ConnectionLoss = | { code: ".."; .. } | ..`): every code the
/// core gives, with its fields, and no code it does not.
fn check_typescript_reasons(declarations: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, codes) in REASON_VOCABULARY {
        let type_name = pascal(name);
        let Some(start) = declarations.find(&format!("export type {type_name} =")) else {
            problems.push(format!("the declarations lack the type `{type_name}`"));
            continue;
        };
        let union = &declarations[start..];
        let union = &union[..union.find(";\n\n").unwrap_or(union.len())];
        // One member per `| {`, up to the next; comments between them belong to neither.
        let members: Vec<(String, &str)> = union
            .split("| {")
            .skip(1)
            .filter_map(|member| {
                let rest = member.split_once("code: \"")?.1;
                Some((rest.split_once('"')?.0.to_owned(), member))
            })
            .collect();
        for (code, fields) in *codes {
            let Some((_, member)) = members.iter().find(|(declared, _)| declared == code) else {
                problems.push(format!("`{type_name}` lacks the code `{code}`"));
                continue;
            };
            for field in *fields {
                if !declares_field(member, field) {
                    problems.push(format!("`{type_name}` `{code}` lacks the field `{field}`"));
                }
            }
        }
        for (declared, _) in &members {
            if !codes.iter().any(|(code, _)| code == declared) {
                problems.push(format!(
                    "`{type_name}` declares the code `{declared}`, which the core does not have"
                ));
            }
        }
    }
    problems
}

/// The reason variants (`variant connection-loss { refused(u8), .. }`): a case per code; a
/// code with two or more fields carries a record of them, one with a single field carries it.
fn check_wit_reasons(resolve: &Resolve, types: wit_parser::InterfaceId) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, codes) in REASON_VOCABULARY {
        let variant_name = kebab(name);
        let Some(&id) = resolve.interfaces[types].types.get(&variant_name) else {
            problems.push(format!("WIT lacks the variant `{variant_name}`"));
            continue;
        };
        let TypeDefKind::Variant(variant) = &resolve.types[id].kind else {
            problems.push(format!("WIT `{variant_name}` is not a variant"));
            continue;
        };
        for (code, fields) in *codes {
            let case_name = kebab(code);
            let Some(case) = variant.cases.iter().find(|case| case.name == case_name) else {
                problems.push(format!("WIT `{variant_name}` lacks the case `{case_name}`"));
                continue;
            };
            match (fields.len(), case.ty) {
                (0 | 1, _) => {}
                (_, None) => problems.push(format!(
                    "WIT `{variant_name}.{case_name}` carries none of its fields"
                )),
                (_, Some(ty)) => {
                    let record = record_of(resolve, ty);
                    let Some(record) = record else {
                        problems.push(format!(
                            "WIT `{variant_name}.{case_name}` carries no record of its fields"
                        ));
                        continue;
                    };
                    for field in *fields {
                        let field = kebab(field);
                        if !record.fields.iter().any(|f| f.name == field) {
                            problems.push(format!(
                                "WIT `{variant_name}.{case_name}` lacks the field `{field}`"
                            ));
                        }
                    }
                }
            }
        }
        for case in &variant.cases {
            if !codes.iter().any(|(code, _)| kebab(code) == case.name) {
                problems.push(format!(
                    "WIT `{variant_name}` has the case `{}`, which the core does not have",
                    case.name
                ));
            }
        }
    }
    problems
}

/// The record a WIT payload type names, if it is one.
fn record_of(resolve: &Resolve, ty: Type) -> Option<&wit_parser::Record> {
    match ty {
        Type::Id(id) => match &resolve.types[id].kind {
            TypeDefKind::Record(record) => Some(record),
            _ => None,
        },
        _ => None,
    }
}

fn check_wit(wit_dir: &Path) -> Vec<String> {
    let mut resolve = Resolve::new();
    let (package, _) = resolve.push_dir(wit_dir).expect("the WIT package parses");
    let types = resolve.packages[package].interfaces["types"];
    let event = resolve.interfaces[types].types["event"];
    let TypeDefKind::Variant(variant) = &resolve.types[event].kind else {
        panic!("`event` in interface `types` is a variant");
    };
    let mut problems = Vec::new();
    for (name, fields) in EVENT_VOCABULARY {
        let case_name = kebab(name);
        let Some(case) = variant.cases.iter().find(|case| case.name == case_name) else {
            problems.push(format!("WIT `event` lacks the case `{case_name}`"));
            continue;
        };
        match (fields.len(), case.ty) {
            (0, None) | (1, Some(_)) => {}
            (0, Some(_)) => problems.push(format!("WIT `{case_name}` carries a payload")),
            (_, None) => problems.push(format!("WIT `{case_name}` carries no payload")),
            (_, Some(ty)) => {
                let record = record_of(&resolve, ty);
                let Some(record) = record else {
                    problems.push(format!("WIT `{case_name}` carries no record of its fields"));
                    continue;
                };
                for field in *fields {
                    let field = kebab(field);
                    if !record.fields.iter().any(|f| f.name == field) {
                        problems.push(format!("WIT `{case_name}` lacks the field `{field}`"));
                    }
                }
            }
        }
    }
    for case in &variant.cases {
        let known = EVENT_VOCABULARY
            .iter()
            .any(|(name, _)| kebab(name) == case.name);
        if !known {
            problems.push(format!(
                "WIT `event` has the case `{}`, which the core does not have",
                case.name
            ));
        }
    }
    problems.extend(check_wit_reasons(&resolve, types));
    problems
}

#[test]
fn the_typescript_declarations_declare_every_event_and_field_of_the_core() {
    let declarations = std::fs::read_to_string(repo().join("wasm-web/js/vdev_web.d.ts"))
        .expect("read vdev_web.d.ts");
    let mut problems = check_typescript(&declarations);
    problems.extend(check_typescript_reasons(&declarations));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_wit_declares_every_event_and_field_of_the_core() {
    let problems = check_wit(&repo().join("wit"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The guards find what they guard: a declaration with an event or a field taken out fails.
#[test]
fn a_missing_event_or_field_is_found() {
    let declarations = std::fs::read_to_string(repo().join("wasm-web/js/vdev_web.d.ts"))
        .expect("read vdev_web.d.ts");
    let without_event: String = declarations
        .lines()
        .filter(|line| !line.contains("kind: \"connectionLost\""))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        check_typescript(&without_event),
        ["DeviceEvent lacks the event `connectionLost`"]
    );
    let without_field = declarations.replace("verificationCode: string; expiresAt", "expiresAt");
    assert_eq!(
        check_typescript(&without_field),
        ["DeviceEvent `provisioningOperation` lacks the field `verificationCode`"]
    );
    let without_code = declarations.replace("    | { code: \"malformed\"; message: string }", "");
    assert_ne!(
        declarations, without_code,
        "the declarations have `malformed`"
    );
    assert_eq!(
        check_typescript_reasons(&without_code),
        ["`RequestFailure` lacks the code `malformed`"]
    );
    let without_reason_field = declarations.replace("attempts: number; minutes", "minutes");
    assert_eq!(
        check_typescript_reasons(&without_reason_field),
        ["`RejectReason` `refusedByGateway` lacks the field `attempts`"]
    );

    let wit = tempfile::tempdir().expect("temp dir");
    copy_dir(&repo().join("wit"), wit.path());
    let types = wit.path().join("types.wit");
    let text = std::fs::read_to_string(&types).expect("read types.wit");
    let without_case = text.replace("        connection-lost(connection-loss),\n", "");
    assert_ne!(text, without_case, "types.wit has the connection-lost case");
    std::fs::write(&types, without_case).expect("write types.wit");
    assert_eq!(
        check_wit(wit.path()),
        ["WIT `event` lacks the case `connection-lost`"]
    );
    let without_reason_case = text.replace("        keep-alive-timed-out,\n", "");
    assert_ne!(
        text, without_reason_case,
        "types.wit has keep-alive-timed-out"
    );
    std::fs::write(&types, without_reason_case).expect("write types.wit");
    assert_eq!(
        check_wit(wit.path()),
        ["WIT `connection-loss` lacks the case `keep-alive-timed-out`"]
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("create dir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
