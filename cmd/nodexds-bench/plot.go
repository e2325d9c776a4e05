package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// plot draws two panels, memory and time against the number of Services,
// one line per source and figure (the median of the runs at each size),
// with the standard library only: lines, dots and a 3×5 bitmap font.
func plot(w io.Writer, rs []result) error {
	if len(rs) == 0 {
		return fmt.Errorf("nothing to plot")
	}
	const pw, ph = 480, 400
	img := image.NewRGBA(image.Rect(0, 0, 2*pw, ph))
	fill(img, img.Bounds(), color.White)

	mib := func(f func(result) uint64) func(result) float64 {
		return func(r result) float64 { return float64(f(r)) / (1 << 20) }
	}
	sec := func(f func(result) time.Duration) func(result) float64 {
		return func(r result) float64 { return f(r).Seconds() }
	}
	var mem, tim []line
	for i, src := range sources(rs) {
		of := filter(rs, src)
		mem = append(mem, newLine(strings.ToUpper(src)+" LIVE HEAP", palette[2*i], of, mib(func(r result) uint64 { return r.HeapFull })))
		if src != "kube" { // its RSS holds the fake API server's objects: not the agent's
			mem = append(mem, newLine(strings.ToUpper(src)+" PEAK RSS", palette[2*i+1], of, mib(func(r result) uint64 { return r.RSSPeak })))
		}
		tim = append(tim,
			newLine(strings.ToUpper(src)+" INITIAL STATE", palette[2*i], of, sec(func(r result) time.Duration { return r.Initial })),
			newLine(strings.ToUpper(src)+" FULL SNAPSHOT", palette[2*i+1], of, sec(func(r result) time.Duration { return r.Full })))
	}
	panel(img, image.Rect(0, 0, pw, ph), "MEMORY (MIB) VS SERVICES", mem)
	panel(img, image.Rect(pw, 0, 2*pw, ph), "TIME (S) VS SERVICES", tim)
	return png.Encode(w, img)
}

var palette = []color.RGBA{
	{0x1f, 0x4e, 0xb4, 0xff}, {0x6f, 0xa8, 0xf0, 0xff}, // events: blues
	{0xc0, 0x2a, 0x1a, 0xff}, {0xf0, 0x98, 0x40, 0xff}, // kube: red, orange
	{0x2a, 0x8a, 0x3a, 0xff}, {0x90, 0xd0, 0x80, 0xff},
}

type point struct{ x, y float64 }

type line struct {
	label string
	color color.RGBA
	pts   []point
}

// newLine is f's median over the runs at each size, in order of size.
func newLine(label string, c color.RGBA, rs []result, f func(result) float64) line {
	by := map[int][]float64{}
	for _, r := range rs {
		by[r.Services] = append(by[r.Services], f(r))
	}
	l := line{label: label, color: c}
	for n, vs := range by {
		slices.Sort(vs)
		l.pts = append(l.pts, point{float64(n), vs[len(vs)/2]})
	}
	slices.SortFunc(l.pts, func(a, b point) int { return int(a.x - b.x) })
	return l
}

func sources(rs []result) []string {
	var out []string
	for _, r := range rs {
		if !slices.Contains(out, r.Source) {
			out = append(out, r.Source)
		}
	}
	return out
}

func filter(rs []result, src string) []result {
	var out []result
	for _, r := range rs {
		if r.Source == src {
			out = append(out, r)
		}
	}
	return out
}

func panel(img *image.RGBA, r image.Rectangle, title string, lines []line) {
	const left, right, top, bottom = 56, 16, 36, 40
	area := image.Rect(r.Min.X+left, r.Min.Y+top, r.Max.X-right, r.Max.Y-bottom)
	grey, black := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}, color.RGBA{0, 0, 0, 0xff}
	text(img, r.Min.X+left, r.Min.Y+12, title, black)

	var xmax, ymax float64
	var xs []float64
	for _, l := range lines {
		for _, p := range l.pts {
			xmax, ymax = math.Max(xmax, p.x), math.Max(ymax, p.y)
			if !slices.Contains(xs, p.x) {
				xs = append(xs, p.x)
			}
		}
	}
	step := niceStep(ymax)
	ytop := math.Ceil(ymax/step) * step
	if ytop == 0 {
		ytop = 1
	}
	px := func(x float64) int { return area.Min.X + int(x/xmax*float64(area.Dx())) }
	py := func(y float64) int { return area.Max.Y - int(y/ytop*float64(area.Dy())) }

	for y := 0.0; y <= ytop+step/2; y += step {
		hline(img, area.Min.X, area.Max.X, py(y), grey)
		lbl := trimFloat(y)
		text(img, area.Min.X-8-width(lbl), py(y)-5, lbl, black)
	}
	for _, x := range xs {
		vline(img, px(x), area.Min.Y, area.Max.Y, grey)
		lbl := fmt.Sprint(int(x))
		if int(x)%1000 == 0 {
			lbl = fmt.Sprintf("%dK", int(x)/1000)
		}
		text(img, px(x)-width(lbl)/2, area.Max.Y+8, lbl, black)
	}
	vline(img, area.Min.X, area.Min.Y, area.Max.Y, black)
	hline(img, area.Min.X, area.Max.X, area.Max.Y, black)

	for i, l := range lines {
		for j, p := range l.pts {
			x, y := px(p.x), py(p.y)
			if j > 0 {
				q := l.pts[j-1]
				segment(img, px(q.x), py(q.y), x, y, l.color)
			}
			fill(img, image.Rect(x-3, y-3, x+4, y+4), l.color)
		}
		// Legend, top left inside the plot area.
		ly := area.Min.Y + 6 + 14*i
		fill(img, image.Rect(area.Min.X+8, ly, area.Min.X+18, ly+10), l.color)
		text(img, area.Min.X+24, ly, l.label, black)
	}
}

// niceStep is a 1, 2 or 5 × 10^k grid step giving at most 6 intervals.
func niceStep(max float64) float64 {
	if max <= 0 {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(max/6)))
	for _, m := range []float64{1, 2, 5, 10} {
		if max/(m*mag) <= 6 {
			return m * mag
		}
	}
	return 10 * mag
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.Set(x, y, c)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	fill(img, image.Rect(x0, y, x1+1, y+1), c)
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	fill(img, image.Rect(x, y0, x+1, y1+1), c)
}

// segment draws a 2-pixel-wide line (Bresenham).
func segment(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		fill(img, image.Rect(x0, y0, x0+2, y0+2), c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

// The font: 3×5 glyphs drawn at scale 2, 2 pixels apart.
const scale = 2

func width(s string) int { return len(s) * (3*scale + scale) }

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	for _, ch := range s {
		g, ok := font[ch]
		if !ok {
			g = font['?']
		}
		for row, bits := range g {
			for col, b := range bits {
				if b == '#' {
					fill(img, image.Rect(x+col*scale, y+row*scale, x+(col+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += 3*scale + scale
	}
}

var font = map[rune][5]string{
	'0': {"###", "#.#", "#.#", "#.#", "###"}, '1': {".#.", "##.", ".#.", ".#.", "###"},
	'2': {"###", "..#", "###", "#..", "###"}, '3': {"###", "..#", ".##", "..#", "###"},
	'4': {"#.#", "#.#", "###", "..#", "..#"}, '5': {"###", "#..", "###", "..#", "###"},
	'6': {"###", "#..", "###", "#.#", "###"}, '7': {"###", "..#", "..#", ".#.", ".#."},
	'8': {"###", "#.#", "###", "#.#", "###"}, '9': {"###", "#.#", "###", "..#", "###"},
	'A': {".#.", "#.#", "###", "#.#", "#.#"}, 'B': {"##.", "#.#", "##.", "#.#", "##."},
	'C': {".##", "#..", "#..", "#..", ".##"}, 'D': {"##.", "#.#", "#.#", "#.#", "##."},
	'E': {"###", "#..", "##.", "#..", "###"}, 'F': {"###", "#..", "##.", "#..", "#.."},
	'G': {".##", "#..", "#.#", "#.#", ".##"}, 'H': {"#.#", "#.#", "###", "#.#", "#.#"},
	'I': {"###", ".#.", ".#.", ".#.", "###"}, 'J': {"..#", "..#", "..#", "#.#", ".#."},
	'K': {"#.#", "#.#", "##.", "#.#", "#.#"}, 'L': {"#..", "#..", "#..", "#..", "###"},
	'M': {"#.#", "###", "###", "#.#", "#.#"}, 'N': {"##.", "#.#", "#.#", "#.#", "#.#"},
	'O': {".#.", "#.#", "#.#", "#.#", ".#."}, 'P': {"##.", "#.#", "##.", "#..", "#.."},
	'Q': {".#.", "#.#", "#.#", "##.", ".##"}, 'R': {"##.", "#.#", "##.", "#.#", "#.#"},
	'S': {".##", "#..", ".#.", "..#", "##."}, 'T': {"###", ".#.", ".#.", ".#.", ".#."},
	'U': {"#.#", "#.#", "#.#", "#.#", "###"}, 'V': {"#.#", "#.#", "#.#", "#.#", ".#."},
	'W': {"#.#", "#.#", "###", "###", "#.#"}, 'X': {"#.#", "#.#", ".#.", "#.#", "#.#"},
	'Y': {"#.#", "#.#", ".#.", ".#.", ".#."}, 'Z': {"###", "..#", ".#.", "#..", "###"},
	'.': {"...", "...", "...", "...", ".#."}, '-': {"...", "...", "###", "...", "..."},
	'/': {"..#", "..#", ".#.", "#..", "#.."}, '(': {".#.", "#..", "#..", "#..", ".#."},
	')': {".#.", "..#", "..#", "..#", ".#."}, '=': {"...", "###", "...", "###", "..."},
	' ': {"...", "...", "...", "...", "..."}, '?': {"###", "..#", ".#.", "...", ".#."},
}
