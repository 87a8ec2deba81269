//! Every PTX file the crate ships loads, and a form the emulator does not know is
//! rejected at load with its line.

use mp_emu::ptx::Module;

#[test]
fn every_vendored_ptx_loads() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../cuda/ptx");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "ptx") {
            let text = std::fs::read_to_string(&path).unwrap();
            let m = Module::load(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!m.kernels.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 10, "found only {n} PTX files");
}

#[test]
fn unknown_instruction_is_rejected_with_its_line() {
    let ptx = ".version 9.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n\t.reg .b32 %r<2>;\n\tpopc.b32 %r1, %r0;\n\tret;\n}\n";
    let e = Module::load(ptx).err().expect("popc is not implemented and must not load");
    assert_eq!(e.line, 7, "{e}");
    assert!(e.message.contains("popc.b32"), "{e}");
}

#[test]
fn version_is_kept() {
    let ptx = ".version 8.7\n.target sm_80\n.address_size 64\n.visible .entry a()\n{\n\tret;\n}\n";
    let m = Module::load(ptx).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.version, (8, 7));
    // Comments may precede `.version`; nothing else may.
    let commented = format!("//\n// Generated\n/* block\n comment */\n{ptx}");
    assert_eq!(Module::load(&commented).unwrap_or_else(|e| panic!("{e}")).version, (8, 7));
    let e = Module::load(&ptx.replace(".version 8.7\n", "")).err().expect("no .version");
    assert!(e.message.contains(".version"), "{e}");
    let e = Module::load(&ptx.replace(".version 8.7\n", ".target sm_80\n.version 8.7\n")).err().expect("late .version");
    assert!(e.message.contains(".version"), "{e}");
}

#[test]
fn reqntid_is_kept_apart_from_maxntid() {
    let ptx = ".version 8.7\n.target sm_80\n.address_size 64\n.visible .entry a()\n.reqntid 128\n{\n\tret;\n}\n.visible .entry b()\n.maxntid 256, 1, 1\n{\n\tret;\n}\n.visible .entry c(.param .u32 c_n)\n.reqntid 8, 4, 2\n{\n\tret;\n}\n";
    let m = Module::load(ptx).unwrap_or_else(|e| panic!("{e}"));
    let k = |n: &str| &m.kernels[m.kernel(n).unwrap()];
    assert_eq!(k("a").req_ntid, Some([128, 1, 1]));
    assert_eq!(k("a").max_ntid, Some([128, 1, 1]), ".reqntid implies the .maxntid bound");
    assert_eq!(k("b").req_ntid, None);
    assert_eq!(k("b").max_ntid, Some([256, 1, 1]));
    assert_eq!(k("c").req_ntid, Some([8, 4, 2]));
    assert!(k("c").check_req_ntid([8, 4, 2]).is_ok());
    assert!(k("c").check_req_ntid([4, 4, 2]).is_err());
    assert!(k("c").check_req_ntid([64, 1, 1]).is_err());
    assert!(k("b").check_req_ntid([1, 1, 1]).is_ok());
    let e =
        Module::load(&ptx.replace(".reqntid 128\n", ".reqntid 128\n.maxntid 128\n")).err().expect("both directives");
    assert!(e.message.contains(".maxntid and .reqntid"), "{e}");
    assert!(Module::load(&ptx.replace(".reqntid 128\n", ".reqntid 0\n")).is_err());
    let hex = Module::load(&ptx.replace(".reqntid 128\n", ".reqntid 0x80\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex.kernels[0].req_ntid, Some([128, 1, 1]));
}
