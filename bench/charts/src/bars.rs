//! One panel of labelled bars with optional whiskers (a median to its p90), the building
//! block of the latency, boot and file charts.

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::DrawError;

/// The runtime colours every chart shares.
pub const RUNVM: RGBColor = RGBColor(0x1f, 0x6f, 0xb4);
/// runc's colour.
pub const RUNC: RGBColor = RGBColor(0xe8, 0x7a, 0x12);
/// A neutral colour for bars that are not one runtime's.
pub const PLAIN: RGBColor = RGBColor(0x55, 0x88, 0x55);

/// One bar.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Under the bar.
    pub label: String,
    /// Its height.
    pub value: f64,
    /// Where its whisker ends (a p90), if it has one.
    pub whisker: Option<f64>,
    /// Its colour.
    pub color: RGBColor,
}

/// Draws `bars` in `area` under `title`, the value axis described by `unit`, each bar's
/// value printed above it with `decimals` decimals.
pub fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    unit: &str,
    decimals: usize,
    bars: &[Bar],
) -> Result<(), DrawError> {
    let top = bars
        .iter()
        .map(|b| b.whisker.unwrap_or(0.0).max(b.value))
        .fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.18 } else { 1.0 };
    let n = u32::try_from(bars.len()).map_err(|_| DrawError::new("too many bars"))?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(34)
        .y_label_area_size(64)
        // A segmented range holds both ends: 0..=n-1 is n bars.
        .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0f64..top)
        .map_err(DrawError::from)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(bars.len() + 1)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 15))
        .y_desc(unit)
        .y_label_formatter(&|v| axis_label(*v))
        .y_label_style(("sans-serif", 13))
        .draw()
        .map_err(DrawError::from)?;
    chart
        .draw_series((0..n).zip(bars).map(|(i, b)| {
            let mut rect = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), b.value),
                ],
                b.color.filled(),
            );
            rect.set_margin(0, 0, 18, 18);
            rect
        }))
        .map_err(DrawError::from)?;
    chart
        .draw_series((0..n).zip(bars).filter_map(|(i, b)| {
            b.whisker.map(|w| {
                PathElement::new(
                    vec![
                        (SegmentValue::CenterOf(i), b.value),
                        (SegmentValue::CenterOf(i), w),
                    ],
                    BLACK.stroke_width(2),
                )
            })
        }))
        .map_err(DrawError::from)?;
    let style = TextStyle::from(("sans-serif", 15).into_font())
        .pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Bottom,
        ))
        .color(&BLACK);
    chart
        .draw_series((0..n).zip(bars).map(|(i, b)| {
            EmptyElement::at((SegmentValue::CenterOf(i), b.value))
                + Text::new(format!("{:.*}", decimals, b.value), (6, -4), style.clone())
        }))
        .map_err(DrawError::from)?;
    Ok(())
}

/// A value-axis label: whole numbers unless the axis is finer than one unit.
pub fn axis_label(v: f64) -> String {
    if v.fract().abs() < 1e-9 || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_drop_needless_decimals() {
        assert_eq!(axis_label(500.0), "500");
        assert_eq!(axis_label(12.5), "12");
        assert_eq!(axis_label(0.5), "0.5");
        assert_eq!(axis_label(0.0), "0");
    }
}
