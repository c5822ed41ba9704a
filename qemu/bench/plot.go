package main

import (
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotTimes draws wall time against receivers, one line per tool, one
// panel per loss rate, and writes it as a PNG.
func plotTimes(path string, runs []cell, losses []int, limit float64) error {
	const w, h = 6 * vg.Inch, 4 * vg.Inch
	img := vgimg.New(w*vg.Length(len(losses)), h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(losses), PadX: vg.Millimeter * 4, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2}
	for i, loss := range losses {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("random payload, %d %% loss at every receiver", loss)
		p.X.Label.Text = "receivers"
		p.Y.Label.Text = "seconds (send start → last verified)"
		p.Y.Min = 0
		var args []any
		top := limit
		for _, tool := range []string{"shoal", "udpcast", "unicast"} {
			var pts plotter.XYs
			for _, r := range runs {
				if r.Group == "raw" && r.Loss == loss && r.Res.Tool == tool && r.Res.OK == r.Res.N {
					pts = append(pts, plotter.XY{X: float64(r.N), Y: r.Res.Wall.Seconds()})
					top = max(top, r.Res.Wall.Seconds())
				}
			}
			if len(pts) > 0 {
				args = append(args, tool, pts)
			}
		}
		if limit > 0 {
			args = append(args, "link limit", plotter.XYs{{X: 1, Y: limit}, {X: 16, Y: limit}})
		}
		if err := plotutil.AddLinePoints(p, args...); err != nil {
			return err
		}
		p.Y.Max = top * 1.3 // room for the legend above the lines
		p.Legend.Top = true
		p.Legend.Left = true
		p.Draw(tiles.At(dc, i, 0))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return err
	}
	return f.Close()
}
