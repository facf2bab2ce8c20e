//! Feature engineering: device-sensitive tensor
//! conversions over nested containers, under `safe_mps!`.
//!
//!     . scripts/torch-env.sh && cargo run --features tch --example feature_engineering
//!
//! Price series per symbol (a `HashMap<String, Vec<Tensor>>`: close and
//! volume) become model features: returns, z-scored volume, rolling
//! volatility. The whole map is named in `[..] =>`, so on an MPS error every
//! tensor in it moves to CPU before the retry. The first run uses fault
//! injection, as a test on a machine without MPS would; the second asks for
//! MPS and meets PyTorch's real error here.

use std::collections::HashMap;

use opguard::{mps, safe_mps, testing};
use tch::{Device, Kind, TchError, Tensor};

type Columns = HashMap<String, Vec<Tensor>>;

fn market_data() -> Columns {
    tch::manual_seed(3);
    ["BTC", "ETH", "SOL"]
        .iter()
        .map(|symbol| {
            let close = (Tensor::randn([256], (Kind::Float, Device::Cpu)) * 0.01 + 1.0)
                .cumprod(0, Kind::Float)
                * 100.0;
            let volume = Tensor::rand([256], (Kind::Float, Device::Cpu)) * 1e6;
            (symbol.to_string(), vec![close, volume])
        })
        .collect()
}

/// Features for one symbol on `dev`: [returns, z-scored volume, 16-step volatility].
fn features(close: &Tensor, volume: &Tensor, dev: Device) -> Result<Tensor, TchError> {
    let close = close.f_to_device(dev)?;
    let volume = volume.f_to_device(dev)?;
    let returns = close
        .f_slice(0, 1, None, 1)?
        .f_div(&close.f_slice(0, 0, -1, 1)?)?
        .f_log()?;
    let vol = volume.f_slice(0, 1, None, 1)?;
    let z_volume = (&vol - vol.f_mean(Kind::Float)?).f_div(&vol.f_std(true)?)?;
    let volatility = returns.f_unfold(0, 16, 1)?.f_std_dim(-1, true, false)?;
    let n = volatility.size()[0];
    Tensor::f_stack(
        &[
            returns.f_slice(0, -n, None, 1)?,
            z_volume.f_slice(0, -n, None, 1)?,
            volatility,
        ],
        1,
    )
}

fn build(
    columns: &mut Columns,
    device: Option<Device>,
) -> Result<HashMap<String, Tensor>, TchError> {
    let run = |columns: &Columns, dev: Device| -> Result<HashMap<String, Tensor>, TchError> {
        columns
            .iter()
            .map(|(symbol, c)| Ok((symbol.clone(), features(&c[0], &c[1], dev)?)))
            .collect()
    };
    match device {
        Some(device) => {
            safe_mps!(label = "features", device = device, [columns] => |dev| run(columns, dev))
        }
        None => safe_mps!(label = "features", [columns] => |dev| run(columns, dev)),
    }
}

fn main() -> Result<(), TchError> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut columns = market_data();

    testing::inject_mps_failures(1);
    let injected = build(&mut columns, None)?;
    let real = build(&mut columns, Some(Device::Mps))?;

    for (symbol, f) in &real {
        assert!(f.allclose(&injected[symbol], 1e-6, 1e-6, false));
        println!(
            "{symbol}: features {:?} on {:?}, mean volatility {:.5}",
            f.size(),
            f.device(),
            f.get(2).mean(Kind::Float).double_value(&[])
        );
    }
    let devices: Vec<_> = columns.values().flatten().map(Tensor::device).collect();
    println!("source columns now on {devices:?}");
    let s = mps::stats();
    println!(
        "MPS registry: {} MPS errors (1 injected), {} fallbacks",
        s.mps_errors, s.fallbacks
    );
    Ok(())
}
