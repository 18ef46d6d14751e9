"""Search-window sizes and thresholds on cached maps: python search_eval.py maps.pt."""
import sys, torch; sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from prior_eval import run
data = torch.load(sys.argv[1])
for s in [3.0, 4.0, 5.0, 8.0]:
  for th in [0.3, 0.5]:
    ao, per = run(data, threshold=th, size_lr=0.5, calibrate=True, search=s)
    print(s, th, round(ao,3), {n[-3:]: round(v, 2) for n, v in per.items()}, flush=True)
