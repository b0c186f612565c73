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
}

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
			mean := make(plotter.XYs, len(s.mean))
			band := make(plotter.XYs, 0, 2*len(s.mean))
			for k := range s.mean {
				mean[k] = plotter.XY{X: float64(k), Y: s.mean[k]}
				band = append(band, plotter.XY{X: float64(k), Y: s.mean[k] + s.sd[k]})
			}
			for k := len(s.mean) - 1; k >= 0; k-- {
				band = append(band, plotter.XY{X: float64(k), Y: s.mean[k] - s.sd[k]})
			}
			c := methodColors[m]
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
