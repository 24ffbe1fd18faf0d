//! The harness's simulated BMC answers IPMI and takes console injections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pitcrew_harness::ipmi::SimulatedBmc;

#[test]
fn a_simulated_bmc_answers_and_takes_injected_sel_entries() {
    let bmc = SimulatedBmc::start().unwrap();
    assert!(bmc
        .ipmitool(&["chassis", "power", "status"])
        .unwrap()
        .contains("Chassis Power is on"));
    let before = bmc.ipmitool(&["sel", "list"]).unwrap().lines().count();
    assert!(before >= 1, "the emulation file's SEL entry");
    bmc.console(
        "sel_add 0x20 0x02 0x00 0x00 0x00 0x00 0x20 0x00 0x04 0x13 0x90 0x6f 0x0a 0xff 0xff",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let after = bmc.ipmitool(&["sel", "list"]).unwrap();
        if after.lines().count() == before + 1 {
            assert!(after.contains("Critical Interrupt"), "{after}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{after}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
