"""Experiment: DINTR on a search-region crop around the previous box (K = 1, box indication).
python crop_val.py NUM FRAMES CONTEXT '{...}'"""
import sys, time, math, torch, numpy as np
import torch.nn.functional as F
torch.set_num_threads(1)
from fasttrack.trackers.dintr import DINTR
from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou
from fasttrack.trackers.diffusion.readout import BoxReader
from fasttrack.trackers.dintr.indication import extract

SC = 256.0  # virtual crop size in readout pixels

def crop(image, box, ctx, S, device, dtype):
    """image HWC uint8 -> (1,3,S,S) in [-1,1] of the square of side L = ctx*sqrt(wh) centred on box; origin, L"""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    H, W = t.shape[-2:]
    x, y, w, h = [float(v) for v in box]
    L = max(ctx * math.sqrt(max(w, 1) * max(h, 1)), 8.0)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = cx - L / 2, cy - L / 2
    f = S / L
    if f < 1:   # antialiased downscale of the whole frame first
        t = F.interpolate(t, size=(max(1, round(H * f)), max(1, round(W * f))), mode="bilinear", align_corners=False, antialias=True)
    Hs, Ws = t.shape[-2:]
    sx, sy = Ws / W, Hs / H
    mean = t.mean((2, 3), keepdim=True)
    # output pixel centre j -> image x = x0 + (j + .5) L / S; in resized pixels * sx; normalized for grid_sample (align_corners False)
    j = (torch.arange(S).float() + 0.5) * L / S
    gx = ((x0 + j) * sx) / Ws * 2 - 1
    gy = ((y0 + j) * sy) / Hs * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    out = F.grid_sample(t - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean
    return (out / 127.5 - 1).clamp(-1, 1).to(device=device, dtype=dtype), (x0, y0, L)

class CropDINTR(DINTR):
    ctx = 4.0
    def _cz(self, image, box):
        x, o = crop(image, box, self.ctx, self.sd.image_size, self.device, self.dtype)
        with torch.no_grad():
            return self.sd.encode(x), o
    def _to_c(self, b, o):
        x0, y0, L = o
        return (b - b.new_tensor([x0, y0, 0, 0])) * (SC / L)
    def _from_c(self, b, o):
        x0, y0, L = o
        return b * (L / SC) + b.new_tensor([x0, y0, 0, 0])
    def _start(self, image, boxes):
        H, W = int(image.shape[0]), int(image.shape[1])
        self._frame_size = (H, W)
        b = torch.as_tensor(boxes, dtype=torch.float32)
        with torch.no_grad():
            for n, p in self._tuned.items():
                p.copy_(self._pristine[n])
        self._masters = None
        self._opt = torch.optim.Adam(list(self._tuned.values()), lr=self.finetune_lr)
        self.finetune_losses = []
        self._gen = torch.Generator().manual_seed(0)
        z, o = self._cz(image, b[0])
        bc = self._to_c(b, o)
        self._image_size = (int(SC), int(SC))
        gt = self._indicator(bc)
        from fasttrack.trackers.diffusion.prompt_learning import initial_prompt
        self.tokens, self.loss_history = self._fit_tokens(initial_prompt(self.sd.null_context, 1, 1, self.sd.prompt_init), z, gt, self.init_steps)
        self._reader = BoxReader(self.threshold, self.search, self.scale_step, self.size_lr, self.calibrate_size)
        self._reader.start(b)
        self._prev_image = image
        self.points = self.masks = None
    def _step(self, image):
        prev = self._reader.boxes.clone()
        z_next, o = self._cz(image, prev[0])
        if self.finetune_steps:
            z_cur, _ = self._cz(self._prev_image, prev[0])
            self._finetune(z_cur, z_next)
        with torch.no_grad():
            maps = self._maps(z_next, self.tokens)
            self._reader.boxes = self._to_c(prev, o)
            out = extract(self.indication, self._reader, maps, self._image_size)
        self._reader.boxes = self._from_c(self._reader.boxes, o)
        self._prev_image = image
        return self._reader.boxes, out["scores"]

if __name__ == "__main__":
    num, frames, ctx = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    extra = eval(sys.argv[4]) if len(sys.argv) > 4 else {}
    split = extra.pop("split", "val")
    CropDINTR.ctx = ctx
    tr = CropDINTR.pretrained(**extra)
    per = {}; t0 = time.time()
    for s in synthetic_split(split, num=num, num_frames=frames):
        boxes = tr.run(s, s.gt[0], progress=False)
        b = np.asarray(boxes if not isinstance(boxes, tuple) else boxes[0])
        per[s.name[-3:]] = round(float(iou(b[1:], np.asarray(s.gt)[1:]).mean()), 2)
    print(ctx, extra, "AO %.3f" % np.mean(list(per.values())), per, "%.0f s" % (time.time() - t0), flush=True)
