package main

import (
	"fmt"
	"image/color"
	"io"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

var methodColors = map[method]color.RGBA{
	evolution: {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	random:    {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	standin:   {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	novelty:   {R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	weights:   {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	bandit:    {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

// maxPlotPoints bounds the points drawn of one curve: a 10,000-evaluation run keeps every
// change of its best and one point in every len/maxPlotPoints besides, so the plot stays a
// few hundred kilobytes and loses no step.
const maxPlotPoints = 1000

// writePlot draws one panel per problem: each method's mean best score against evaluations,
// with a band of ± one standard deviation over the seeds, as SVG or, with png set, PNG.
func writePlot(w io.Writer, png bool, order []string, methods []method, out outcome, seeds int) error {
	row := make([]*plot.Plot, 0, len(order))
	for _, name := range order {
		p := plot.New()
		p.Title.Text = name
		p.X.Label.Text = "evaluations"
		p.Y.Label.Text = fmt.Sprintf("best combined_score (mean ± sd, %d seeds)", seeds)
		p.Legend.Top = true
		p.Legend.Left = true
		p.Legend.XOffs = vg.Points(8)
		p.Add(plotter.NewGrid())
		for _, m := range methods {
			s := summarize(out[name][m])
			ks := plotIndices(s.mean, s.sd)
			mean := make(plotter.XYs, len(ks))
			band := make(plotter.XYs, 0, 2*len(ks))
			for i, k := range ks {
				mean[i] = plotter.XY{X: float64(k), Y: s.mean[k]}
				band = append(band, plotter.XY{X: float64(k), Y: s.mean[k] + s.sd[k]})
			}
			for i := len(ks) - 1; i >= 0; i-- {
				k := ks[i]
				band = append(band, plotter.XY{X: float64(k), Y: s.mean[k] - s.sd[k]})
			}
			c, ok := methodColors[m]
			if !ok {
				c = color.RGBA{A: 0xff}
			}
			poly, err := plotter.NewPolygon(band)
			if err != nil {
				return err
			}
			poly.Color = color.NRGBA{R: c.R, G: c.G, B: c.B, A: 0x38}
			poly.LineStyle.Width = 0
			line, err := plotter.NewLine(mean)
			if err != nil {
				return err
			}
			line.Color = c
			line.Width = vg.Points(1.5)
			p.Add(poly, line)
			p.Legend.Add(string(m), line)
		}
		row = append(row, p)
	}
	const panelW, panelH = 4.2 * vg.Inch, 3.2 * vg.Inch
	width := panelW * vg.Length(len(row))
	var canvas interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if png {
		canvas = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, panelH), vgimg.UseDPI(120))}
	} else {
		canvas = vgsvg.New(width, panelH)
	}
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 4, PadY: vg.Millimeter,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, draw.New(canvas))
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	_, err := canvas.WriteTo(w)
	return err
}

// plotIndices picks the evaluations of a curve to draw: all of them up to maxPlotPoints;
// beyond, every stride-th, the last, and each one where the mean or the spread changes, so
// the steps of a best-so-far curve keep their place.
func plotIndices(mean, sd []float64) []int {
	n := len(mean)
	if n <= maxPlotPoints {
		ks := make([]int, n)
		for k := range ks {
			ks[k] = k
		}
		return ks
	}
	stride := n / maxPlotPoints
	ks := make([]int, 0, 2*maxPlotPoints)
	for k := range n {
		changed := k > 0 && (mean[k] != mean[k-1] || sd[k] != sd[k-1])
		if k%stride == 0 || k == n-1 || changed {
			if changed && ks[len(ks)-1] != k-1 { // k = 0 is always drawn, so ks is not empty
				ks = append(ks, k-1) // the level just before the step
			}
			ks = append(ks, k)
		}
	}
	return ks
}
