"""Where trials run: resources and GPU packing, node ids, credential hygiene, step costs."""
