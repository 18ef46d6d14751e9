"""What the diffusion trackers (Diff-Tracker, DINTR) share: Stable Diffusion components (sd),
the recorded UNet pass patched or not (maps), maps to boxes (boxes), learning a prompt through
the maps (prompt_learning) and from_pretrained / save_pretrained / tiny (serialization)."""
