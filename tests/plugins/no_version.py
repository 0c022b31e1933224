def register(api):
    pass
