// The place map's geometry, drawn offline: an equirectangular projection of the records' extent
// (x = longitude scaled by the cosine of the middle latitude, y = latitude), a graticule, a scale
// bar and the place filter's circle. No tiles and no network: only the records' own coordinates.
"use strict";

const KM_PER_DEGREE = 6371.0088 * Math.PI / 180;

const Places = {
  // the projection of extent {south, north, west, east} into a canvas, kept square in km
  frame(extent, canvas) {
    const pad = 34, midLat = (extent.south + extent.north) / 2, midLon = (extent.west + extent.east) / 2;
    const kx = Math.max(Math.cos(midLat * Math.PI / 180), 0.05);
    const scale = Math.min((canvas.width - 2 * pad) / Math.max((extent.east - extent.west) * kx, 1e-9),
                           (canvas.height - 2 * pad) / Math.max(extent.north - extent.south, 1e-9));
    return { midLat, midLon, kx, scale, cx: canvas.width / 2, cy: canvas.height / 2 };
  },
  project(point, f) { return [f.cx + (point[0] - f.midLon) * f.kx * f.scale, f.cy - (point[1] - f.midLat) * f.scale]; },
  unproject(x, y, f) { return [f.midLat - (y - f.cy) / f.scale, f.midLon + (x - f.cx) / (f.kx * f.scale)]; },

  niceStep(span, lines) {
    const steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 45, 90];
    return steps.find((s) => span / s <= lines) || 90;
  },

  // 37.5 -> "37.5°N", with as many decimals as the graticule's step has
  degrees(value, step, positive, negative) {
    const digits = step >= 1 ? 0 : Math.ceil(-Math.log10(step) - 1e-9);
    return `${Math.abs(value).toFixed(digits)}°${value >= 0 ? positive : negative}`;
  },

  // graticule with degree labels, and a scale bar in km
  drawBackground(ctx, f, canvas) {
    const [south, west] = this.unproject(0, canvas.height, f), [north, east] = this.unproject(canvas.width, 0, f);
    ctx.save();
    ctx.strokeStyle = "#e3e7ea"; ctx.fillStyle = "#8a949c"; ctx.lineWidth = 1; ctx.font = "11px system-ui, sans-serif";
    const latStep = this.niceStep(north - south, 7), lonStep = this.niceStep(east - west, 9);
    for (let lat = Math.ceil(south / latStep) * latStep; lat <= north; lat += latStep) {
      const y = this.project([west, lat], f)[1];
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(canvas.width, y); ctx.stroke();
      ctx.fillText(this.degrees(lat, latStep, "N", "S"), 4, y - 3);
    }
    for (let lon = Math.ceil(west / lonStep) * lonStep; lon <= east; lon += lonStep) {
      const x = this.project([lon, south], f)[0];
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); ctx.stroke();
      ctx.fillText(this.degrees(lon, lonStep, "E", "W"), x + 3, canvas.height - 5);
    }
    const pxPerKm = f.scale / KM_PER_DEGREE;
    const barKm = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
      .find((k) => k * pxPerKm >= canvas.width / 8) || 5000;
    const x0 = canvas.width - 24 - barKm * pxPerKm, y0 = 22;
    ctx.strokeStyle = "#1d2327"; ctx.fillStyle = "#1d2327"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x0 + barKm * pxPerKm, y0); ctx.stroke();
    ctx.fillText(`${barKm} km`, x0, y0 - 5);
    ctx.restore();
  },

  // the place filter: a circle of `km` around `near` ([lat, lon])
  drawCircle(ctx, f, near, km) {
    const [x, y] = this.project([near[1], near[0]], f), r = km / KM_PER_DEGREE * f.scale;
    ctx.save();
    ctx.strokeStyle = "#0b5cad"; ctx.fillStyle = "rgba(11, 92, 173, 0.08)"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(x, y, Math.max(r, 3), 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(x - 6, y); ctx.lineTo(x + 6, y); ctx.moveTo(x, y - 6); ctx.lineTo(x, y + 6); ctx.stroke();
    ctx.restore();
  },

  // "37.9715, 23.7257" -> [37.9715, 23.7257], or null
  parseNear(text) {
    const parts = text.split(",").map((p) => Number(p.trim()));
    if (parts.length !== 2 || parts.some((p) => !Number.isFinite(p)) || Math.abs(parts[0]) > 90 || Math.abs(parts[1]) > 180) return null;
    return parts;
  },
};
