//! Tests of what `--gpus` decides without a GPU: the rank environment, the id's hex, which
//! GPU each rank gets.

use super::*;

const ID: &str = "00ff10";

fn hex_id() -> String {
    (0..ID_BYTES).map(|i| format!("{:02x}", (i * 7) as u8)).collect()
}

fn refused(rank: Option<&str>, world: Option<&str>, id: Option<&str>) -> String {
    RankEnv::parse(rank, world, id).unwrap_err().to_string()
}

#[test]
fn rank_env_parses_what_rank_0_sets() {
    assert_eq!(RankEnv::parse(None, None, None).unwrap(), None);
    let id = hex_id();
    let env = RankEnv::parse(Some("2"), Some("4"), Some(&id)).unwrap().unwrap();
    assert_eq!((env.rank, env.world, to_hex(&env.id)), (2, 4, id.clone()));
    let upper = id.to_uppercase();
    assert_eq!(RankEnv::parse(Some("1"), Some("2"), Some(&upper)).unwrap().unwrap().id, env.id);
}

#[test]
fn rank_env_rejects_bad_values_naming_the_variable() {
    let id = hex_id();
    let msg = refused(Some("1"), None, None);
    assert!(msg.starts_with("MAMBA_WORLD and MAMBA_NCCL_ID not set") && msg.contains("unset them"), "{msg}");
    assert!(refused(Some("x"), Some("2"), Some(&id)).starts_with("MAMBA_RANK=\"x\" is not a rank number"));
    assert!(refused(Some("1"), Some("-2"), Some(&id)).starts_with("MAMBA_WORLD=\"-2\" is not a number"));
    for (rank, world) in [("0", "2"), ("2", "2"), ("1", "1"), ("5", "4")] {
        let msg = refused(Some(rank), Some(world), Some(&id));
        assert!(msg.contains(&format!("MAMBA_RANK={rank} of MAMBA_WORLD={world}")), "{msg}");
    }
    for bad in [ID, &id[1..], &format!("{}zz", &id[2..]), &format!("{id}00"), "é"] {
        let msg = refused(Some("1"), Some("2"), Some(bad));
        assert!(msg.starts_with("MAMBA_NCCL_ID is not 256 hex digits"), "{bad}: {msg}");
    }
}

#[test]
fn hex_round_trips_and_refuses_odd_input() {
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
    assert_eq!(from_hex(ID).unwrap(), [0, 255, 16]);
    assert!(from_hex("abc").is_none() && from_hex("0g").is_none() && from_hex("+1").is_none());
}

#[test]
fn each_rank_gets_one_of_the_visible_gpus() {
    assert_eq!(rank_devices(None, 3).unwrap(), ["0", "1", "2"]);
    assert_eq!(rank_devices(Some("4, 6,GPU-ab12"), 2).unwrap(), ["4", "6"]);
    assert_eq!(rank_devices(Some("4,6,GPU-ab12"), 3).unwrap(), ["4", "6", "GPU-ab12"]);
    let msg = rank_devices(Some("3"), 2).unwrap_err().to_string();
    assert!(msg.contains("--gpus 2: CUDA_VISIBLE_DEVICES=\"3\" names 1 GPU(s)"), "{msg}");
    assert!(rank_devices(Some(""), 1).is_err());
}
