//! The kernel declarations of `backend::gpu::kernels` against the WGSL they describe,
//! without a GPU: every shader family is parsed and validated by naga (the front end wgpu
//! compiles it with), and for every declared kernel
//!
//! * its entry point exists in its family;
//! * the bindings the entry point uses (globals reachable from it, as wgpu derives the
//!   pipeline layout) are exactly binding 0 (the parameter slot) and the declared buffers;
//! * a buffer declared `read` is never written by the entry point, one declared
//!   `read_write` is written;
//! * its overrides exist in the family;
//! * the `// params:` comment above the entry point names the declared parameters in the
//!   declared `Params` fields, and no field holds two parameters;
//!
//! and every entry point of every family has exactly one declaration.
#![cfg(feature = "gpu")]

use std::collections::{BTreeMap, BTreeSet};

use naga::valid::{Capabilities, GlobalUse, ModuleInfo, ValidationFlags, Validator};
use suanpan::backend::gpu::kernels::{KernelDecl, ALL};
use suanpan::backend::gpu::pipeline::Shader;

struct Family {
    src: String,
    module: naga::Module,
    info: ModuleInfo,
}

fn family(sh: Shader) -> Family {
    let src = sh.source();
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{sh:?}: {}", e.emit_to_string(&src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{sh:?} does not validate: {e:?}"));
    Family { src, module, info }
}

fn families() -> BTreeMap<String, Family> {
    Shader::ALL
        .iter()
        .map(|&s| (format!("{s:?}"), family(s)))
        .collect()
}

/// Binding → whether `entry` writes it, for every binding the entry point uses.
fn used_bindings(f: &Family, entry: &str) -> Option<BTreeMap<u32, bool>> {
    let i = f.module.entry_points.iter().position(|e| e.name == entry)?;
    let uses = f.info.get_entry_point(i);
    let mut out = BTreeMap::new();
    for (h, var) in f.module.global_variables.iter() {
        let u = uses[h];
        if u.is_empty() {
            continue;
        }
        if let Some(rb) = &var.binding {
            assert_eq!(rb.group, 0, "{entry}: binding outside group 0");
            out.insert(rb.binding, u.contains(GlobalUse::WRITE));
        }
    }
    Some(out)
}

/// The `// params:` line right above `@compute ... fn entry(`.
fn params_line<'a>(src: &'a str, entry: &str) -> Option<&'a str> {
    let lines: Vec<&str> = src.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("fn {entry}(")))?;
    if at < 2 || !lines[at - 1].starts_with("@compute") {
        return None;
    }
    lines[at - 2].strip_prefix("// params: ")
}

fn check(d: &KernelDecl, f: &Family) -> Vec<String> {
    let mut errs = Vec::new();
    let who = format!("{} ({:?} \"{}\")", d.name, d.shader, d.entry);
    let Some(used) = used_bindings(f, d.entry) else {
        return vec![format!("{who}: no such entry point")];
    };
    let mut want: BTreeMap<u32, bool> = BTreeMap::new();
    for b in d.buffers {
        if b.binding == 0 || want.insert(b.binding, b.writes).is_some() {
            errs.push(format!("{who}: binding {} declared twice or 0", b.binding));
        }
    }
    if used.get(&0) != Some(&false) {
        errs.push(format!(
            "{who}: does not read the parameter slot (binding 0)"
        ));
    }
    let used_bufs: BTreeMap<u32, bool> = used.into_iter().filter(|(b, _)| *b != 0).collect();
    let (ub, wb): (BTreeSet<_>, BTreeSet<_>) = (
        used_bufs.keys().copied().collect(),
        want.keys().copied().collect(),
    );
    if ub != wb {
        errs.push(format!(
            "{who}: the shader uses bindings {ub:?}, the declaration binds {wb:?}"
        ));
    }
    for b in d.buffers {
        if let Some(&w) = used_bufs.get(&b.binding) {
            if w != b.writes {
                errs.push(format!(
                    "{who}: buffer {} (binding {}) is declared {} but the entry point {}",
                    b.name,
                    b.binding,
                    if b.writes { "read_write" } else { "read" },
                    if w { "writes it" } else { "only reads it" }
                ));
            }
        }
    }
    for o in d.overrides {
        if !f
            .module
            .overrides
            .iter()
            .any(|(_, v)| v.name.as_deref() == Some(o))
        {
            errs.push(format!("{who}: override {o} is not in the shader"));
        }
    }
    let mut fields = BTreeSet::new();
    for p in d.params {
        if !fields.insert(p.field) {
            errs.push(format!("{who}: two parameters in {}", p.field));
        }
    }
    let want_line: Vec<String> = d
        .params
        .iter()
        .map(|p| format!("{}={}", p.name, p.field))
        .collect();
    match params_line(&f.src, d.entry) {
        Some(l) if l == want_line.join(" ") => {}
        got => errs.push(format!(
            "{who}: the line above the entry point should be `// params: {}`, is {got:?}",
            want_line.join(" ")
        )),
    }
    errs
}

#[test]
fn every_declaration_matches_its_shader() {
    let fams = families();
    let errs: Vec<String> = ALL
        .iter()
        .flat_map(|d| check(d, &fams[&format!("{:?}", d.shader)]))
        .collect();
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn every_entry_point_is_declared_once() {
    let fams = families();
    let mut declared: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in ALL {
        *declared
            .entry((format!("{:?}", d.shader), d.entry.to_string()))
            .or_default() += 1;
    }
    let mut errs = Vec::new();
    for (name, f) in &fams {
        for ep in &f.module.entry_points {
            match declared.remove(&(name.clone(), ep.name.clone())) {
                Some(1) => {}
                Some(n) => errs.push(format!("{name} \"{}\": {n} declarations", ep.name)),
                None => errs.push(format!("{name} \"{}\": no declaration", ep.name)),
            }
        }
    }
    for ((name, entry), _) in declared {
        errs.push(format!("declared {name} \"{entry}\" is not an entry point"));
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    assert!(ALL.len() >= 21, "{} declarations", ALL.len());
}

/// The checker itself catches a wrong declaration (a swapped binding, a wrong access, a
/// renamed parameter), so a pass above means something.
#[test]
fn a_wrong_declaration_is_caught() {
    use suanpan::backend::gpu::kernels::{BufferDecl, ParamDecl};
    let fams = families();
    let rms = *ALL
        .iter()
        .find(|d| d.entry == "rms_norm")
        .expect("rms_norm");
    let f = &fams["Elementwise"];
    assert!(check(&rms, f).is_empty());
    let swapped: &'static [BufferDecl] = Box::leak(Box::new([
        BufferDecl {
            binding: 4,
            ..rms.buffers[0]
        },
        rms.buffers[1],
        rms.buffers[2],
    ]));
    let e = check(
        &KernelDecl {
            buffers: swapped,
            ..rms
        },
        f,
    );
    assert!(e.iter().any(|m| m.contains("uses bindings")), "{e:?}");
    let ro_out: &'static [BufferDecl] = Box::leak(Box::new([
        rms.buffers[0],
        rms.buffers[1],
        BufferDecl {
            writes: false,
            ..rms.buffers[2]
        },
    ]));
    let e = check(
        &KernelDecl {
            buffers: ro_out,
            ..rms
        },
        f,
    );
    assert!(e.iter().any(|m| m.contains("declared read but")), "{e:?}");
    let mut params: Vec<ParamDecl> = rms.params.to_vec();
    params[0].field = "a.y";
    let params: &'static [ParamDecl] = Box::leak(params.into_boxed_slice());
    let e = check(&KernelDecl { params, ..rms }, f);
    assert!(
        e.iter().any(|m| m.contains("two parameters in a.y")),
        "{e:?}"
    );
    assert!(e.iter().any(|m| m.contains("// params:")), "{e:?}");
    let e = check(
        &KernelDecl {
            entry: "rms_norm_x",
            ..rms
        },
        f,
    );
    assert_eq!(
        e,
        vec!["RmsNorm (Elementwise \"rms_norm_x\"): no such entry point"]
    );
}
